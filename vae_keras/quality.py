"""How good are the samples: a digit classifier's view of generated and reconstructed digits.

The scores' formulas and references are in docs/design-notes.md.
"""

import dataclasses
import math

import keras
import matplotlib.figure
import numpy as np

from vae_keras import plotting
from vae_keras.classifier import FEATURES_LAYER
from vae_keras.config import MAX_SEED, NUM_CLASSES, check_int
from vae_keras.data import in_batches

# Images per classifier or decoder call: bounds the memory the report uses.
BATCH_SIZE = 1_000
# The sets of a report, in the order of its table.
SET_NAMES = ("test images", "training images", "reconstructions", "generated")
# Tolerance on the sum of a row of probabilities (float32 softmax outputs).
_SUM_TOLERANCE = 1e-3


def feature_statistics(features):
    """The mean (D,) and covariance (D, D) (unbiased, as `numpy.cov`) of features (N, D), N >= 2, in float64.

    Raises a ValueError when `features` is not a finite 2-D array of at least 2 rows.
    """
    features = np.asarray(features, dtype="float64")
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be a 2-D array (N, D) with N >= 2, received shape {features.shape}")
    if not np.all(np.isfinite(features)):
        raise ValueError("features holds values that are not finite (NaN or infinity)")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance_from_statistics(mean_a, covariance_a, mean_b, covariance_b):
    """The Fréchet distance (>= 0) between two Gaussians given by their means (D,) and covariances (D, D).

    Raises a ValueError when the shapes do not agree or a value is not finite.
    """
    mean_a, covariance_a, mean_b, covariance_b = (
        np.asarray(value, dtype="float64") for value in (mean_a, covariance_a, mean_b, covariance_b)
    )
    dimension = mean_a.shape[0] if mean_a.ndim == 1 else None
    square = (dimension, dimension)
    for name, value, shape in (("mean_a", mean_a, (dimension,)), ("mean_b", mean_b, (dimension,)),
                               ("covariance_a", covariance_a, square), ("covariance_b", covariance_b, square)):
        if dimension is None or value.shape != shape:
            raise ValueError(
                f"{name} must have shape {shape if dimension else '(D,) or (D, D)'} to match "
                f"mean_a, received shape {value.shape}"
            )
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} holds values that are not finite (NaN or infinity)")
    # Tr((C_a C_b)^(1/2)) = Tr((A C_b A)^(1/2)), A the symmetric square root of C_a; round-off eigenvalues < 0 set to 0.
    eigenvalues, eigenvectors = np.linalg.eigh((covariance_a + covariance_a.T) / 2)
    sqrt_a = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T
    product = sqrt_a @ covariance_b @ sqrt_a
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0.0, None)).sum()
    difference = mean_a - mean_b
    distance = difference @ difference + np.trace(covariance_a) + np.trace(covariance_b) - 2 * trace_sqrt
    return float(max(distance, 0.0))


def class_histogram(labels_or_probabilities, num_classes=NUM_CLASSES):
    """The fraction of a set given to each class: a float64 array (num_classes,) that sums to 1.

    `labels_or_probabilities`: integer labels (N,) in [0, num_classes), or class probabilities (N, num_classes),
    whose arg-max is taken as the label. Raises a ValueError for an empty set, labels that are not integers in
    range, or probabilities with another number of classes.
    """
    values = np.asarray(labels_or_probabilities)
    if values.ndim == 2:
        labels = _probabilities(values, "labels_or_probabilities", num_classes).argmax(axis=1)
    elif values.ndim == 1:
        if values.size and not np.issubdtype(values.dtype, np.integer):
            raise ValueError(
                f"labels must be integers, received dtype {values.dtype}; pass probabilities "
                "as a 2-D array of shape (N, num_classes)"
            )
        labels = values
    else:
        raise ValueError(
            f"labels_or_probabilities must be labels (N,) or probabilities (N, {num_classes}), "
            f"received shape {values.shape}"
        )
    if labels.size == 0:
        raise ValueError("labels_or_probabilities is empty; a histogram needs at least one item")
    low, high = labels.min(), labels.max()
    if low < 0 or high >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), received values from {low} to {high}")
    return np.bincount(labels, minlength=num_classes) / labels.size


def histogram_entropy(histogram):
    """The entropy of a class histogram (K,), K >= 2, over its maximum log(K): 1 for an even spread, 0 for one class.

    Raises a ValueError when `histogram` is not 1-D, or not non-negative fractions summing to 1.
    """
    histogram = np.asarray(histogram, dtype="float64")
    if histogram.ndim != 1 or histogram.size < 2:
        raise ValueError(f"histogram must be 1-D with at least 2 classes, received shape {histogram.shape}")
    if np.any(histogram < 0) or not math.isclose(histogram.sum(), 1.0, abs_tol=1e-6):
        raise ValueError(
            f"histogram must hold non-negative fractions summing to 1, received sum {float(histogram.sum())!r} "
            f"and minimum {float(histogram.min())!r}"
        )
    positive = histogram[histogram > 0]
    # A one-class histogram gives -0.0 * log(1); + 0.0 makes it 0.0, which prints without a sign.
    return float(-(positive * np.log(positive)).sum() / np.log(histogram.size)) + 0.0


def classifier_score(probabilities):
    """The classifier's "inception score" of a set, exp(E_x[KL(p(y|x) || p(y))]), a float in [1, K].

    High when each image is classified confidently and the set covers the classes evenly.
    `probabilities`: (N, K), rows non-negative and summing to 1 (else a ValueError), as for the functions below.
    """
    probabilities = _probabilities(probabilities, "probabilities").astype("float64")
    marginal = probabilities.mean(axis=0)
    # 0 log 0 = 0: a class with p(y|x) = 0 adds nothing to the KL divergence.
    safe = np.where(probabilities > 0, probabilities, 1.0)
    kl = (probabilities * (np.log(safe) - np.log(np.where(marginal > 0, marginal, 1.0)))).sum(axis=1)
    return float(np.exp(kl.mean()))


def mean_top_probability(probabilities):
    """How sure the classifier is, on average: the mean probability of each image's most likely class, in [1/K, 1]."""
    return float(_probabilities(probabilities, "probabilities").max(axis=1).mean())


def label_agreement(probabilities, labels):
    """The accuracy: the fraction of a set whose most likely class is its label; a ValueError if the lengths differ."""
    return float(np.mean(_hits(probabilities, labels)))


def grey_fraction(images, ink=0.1, solid=0.9):
    """How blurry a set of digits is: the fraction of its inked pixels that are grey, neither background nor solid.

    A pixel is inked above `ink`, and grey when it is also below `solid` (0 <= ink < solid <= 1, else a
    ValueError). MNIST's own digits have grey, anti-aliased edges; a decoder that averages several possible
    strokes paints wider grey ones. `images`: (N, 28, 28, 1) or (N, 28, 28) in [0, 1]; 0.0 for images without ink.
    """
    if not 0.0 <= ink < solid <= 1.0:
        raise ValueError(f"grey_fraction needs 0 <= ink < solid <= 1, received ink={ink!r}, solid={solid!r}")
    images = plotting.check_images(images)
    inked = images > ink
    count = int(inked.sum())
    return float((inked & (images < solid)).sum() / count) if count else 0.0


def digit_agreement(probabilities, labels, num_classes=NUM_CLASSES):
    """Per digit (num_classes,): the fraction of the images of that label whose most likely class is the label.

    NaN for a label with no image; a ValueError if the lengths differ. For a conditional VAE's digits, with
    `labels` the digits asked for, this is how often the classifier reads each requested digit.
    """
    labels = np.asarray(labels).reshape(-1)
    hits = _hits(probabilities, labels)
    return np.array(
        [hits[labels == digit].mean() if np.any(labels == digit) else np.nan for digit in range(num_classes)]
    )


def requested_digit_agreement(model, classifier, n=1_000, seed=0, batch_size=BATCH_SIZE):
    """For a conditional VAE: how often the classifier reads each generated digit 0-9 as the digit asked for, (10,).

    `n` digits are generated per class, from the codes of `model.prior_codes(10 * n, seed)`. Raises a ValueError
    for an unconditional model or `n` not a positive integer.
    """
    if not model.conditional:
        raise ValueError("requested_digit_agreement needs a conditional VAE; this model is unconditional")
    check_int("n", n)
    labels = np.repeat(np.arange(NUM_CLASSES), n).astype("int32")
    images = model.generate(len(labels), seed=seed, batch_size=batch_size, digit=labels)
    _, probabilities = _classify(classifier, images, batch_size)
    return digit_agreement(probabilities, labels)


@dataclasses.dataclass
class SetQuality:
    """The classifier's view of one set of images."""

    name: str  # which set: "test images", "training images", "reconstructions" or "generated" (or "NAME: ...")
    frechet_distance: float  # to the test images, in the classifier's feature space (0 for them)
    classifier_score: float  # exp(E[KL(p(y|x) || p(y))]): 1 (one class, or unsure) to 10 (confident, all classes)
    mean_top_probability: float  # mean probability of the most likely class: how sure the classifier is
    class_histogram: np.ndarray  # fraction of the set given to each digit 0-9
    histogram_entropy: float  # entropy of that histogram divided by log(10): 1 for an even spread
    # Fraction classified as the true label: for a conditional VAE's generated digits the digit asked for,
    # None for an unconditional VAE's, which have none.
    label_agreement: float | None


@dataclasses.dataclass
class QualityReport:
    """The sample-quality report of a VAE: one `SetQuality` per set of images."""

    n: int  # images per set
    seed: int  # of the codes of the generated digits and of the training images drawn
    sets: dict  # the sets by name, in the order of `SET_NAMES` (several models: each model's two in turn)


def quality_report(model, classifier, data, n=10_000, seed=0, batch_size=BATCH_SIZE):
    """The sample-quality `QualityReport` of a VAE, seen through a digit classifier (see `load_classifier`).

    `model` may be several, `{name: VAE}`: their sets are named "NAME: reconstructions" and "NAME: generated".

    Args:
        data: `((x_train, y_train), (x_test, y_test))` as `load_mnist` returns.
        n: images per set (test images, random training images, test reconstructions and generated digits),
            from 2 to the number of test images.
        seed: seed of the generated codes and of the training images drawn.
        batch_size: images per call (memory only).

    Raises a ValueError when `n`, `seed` or `batch_size` is out of range.
    """
    (x_train, y_train), (x_test, y_test) = data
    limit = min(len(x_test), len(x_train))
    check_int("n", n, minimum=2, maximum=limit, maximum_is="the images available")
    check_int("seed", seed, minimum=0, maximum=MAX_SEED)
    n = int(n)
    x_test, y_test = x_test[:n], np.asarray(y_test[:n])
    training_indices = np.sort(np.random.default_rng([seed, 1]).choice(len(x_train), size=n, replace=False))
    # Each set is made and classified in turn; only its features and probabilities are kept.
    outputs = {
        "test images": (_classify(classifier, x_test, batch_size), y_test),
        "training images": (
            _classify(classifier, x_train[training_indices], batch_size), np.asarray(y_train)[training_indices]
        ),
    }
    for name, one in (model if isinstance(model, dict) else {"": model}).items():
        prefix = f"{name}: " if name else ""
        outputs[prefix + "reconstructions"] = (
            _classify(classifier, _reconstructions(one, x_test, y_test, batch_size), batch_size), y_test)
        outputs[prefix + "generated"] = (
            _classify(classifier, one.generate(n, seed=seed, batch_size=batch_size), batch_size),
            one.prior_labels(n),  # the digits a conditional model was asked for; None for others
        )
    test_statistics = feature_statistics(outputs["test images"][0][0])
    sets = {}
    for name, ((features, probabilities), labels) in outputs.items():
        histogram = class_histogram(probabilities)
        sets[name] = SetQuality(
            name=name,
            frechet_distance=(
                0.0 if name == "test images"
                else frechet_distance_from_statistics(*feature_statistics(features), *test_statistics)
            ),
            classifier_score=classifier_score(probabilities),
            mean_top_probability=mean_top_probability(probabilities),
            class_histogram=histogram,
            histogram_entropy=histogram_entropy(histogram),
            label_agreement=None if labels is None else label_agreement(probabilities, labels),
        )
    return QualityReport(n=n, seed=int(seed), sets=sets)


def format_report(report, markdown=False):
    """The `QualityReport` as a table of one row per set: aligned plain text, or a Markdown table; no final newline."""
    header = ["set", "Fréchet distance", "classifier score", "mean top prob.", "class entropy", "rarest digit",
              "commonest digit", "true label"]
    rows = []
    for quality in report.sets.values():
        rarest, commonest = int(quality.class_histogram.argmin()), int(quality.class_histogram.argmax())
        rows.append([
            quality.name, f"{quality.frechet_distance:.2f}", f"{quality.classifier_score:.2f}",
            f"{quality.mean_top_probability:.3f}", f"{quality.histogram_entropy:.3f}",
            f"{rarest}: {100 * quality.class_histogram[rarest]:.1f}%",
            f"{commonest}: {100 * quality.class_histogram[commonest]:.1f}%",
            "-" if quality.label_agreement is None else f"{100 * quality.label_agreement:.2f}%",
        ])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        widths = [max(len(line[column]) for line in [header, *rows]) for column in range(len(header))]
        lines = [
            "  ".join(cell.ljust(width) if column == 0 else cell.rjust(width)
                      for column, (cell, width) in enumerate(zip(line, widths)))
            for line in [header, *rows]
        ]
    title = f"Sample quality, {report.n} images per set (seed {report.seed}); Fréchet distance to the test images"
    return "\n".join([title, *lines])


def plot_least_confident(model, classifier, n=25, pool=1_000, seed=0, path=None):
    """A `matplotlib.figure.Figure` of the `n` of `pool` generated digits the classifier is least sure of.

    The digits are generated from the codes of `model.generate(pool, seed)` and shown least sure first, titled
    "digit (probability)" ("asked→digit (probability)" for a conditional model, which is asked for 0-9 in turn).
    `path`: where to save the figure; None: not saved. Raises a ValueError when `n` or `pool` is not a positive
    integer or `n > pool`.
    """
    check_int("pool", pool)
    check_int("n", n, maximum=pool, maximum_is="the pool")
    images, asked = model.generate(pool, seed=seed, batch_size=BATCH_SIZE), model.prior_labels(pool)
    _, probabilities = _classify(classifier, images, BATCH_SIZE)
    top = probabilities.max(axis=1)
    order = np.argsort(top, kind="stable")[:n]
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    figure = matplotlib.figure.Figure(figsize=(1.3 * columns, 1.45 * rows + 0.4), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis in axes:
        axis.set_axis_off()
    for axis, index in zip(axes, order):
        axis.imshow(images[index, ..., 0], **plotting.IMAGE_STYLE)
        asked_for = "" if asked is None else f"{asked[index]}→"
        axis.set_title(f"{asked_for}{probabilities[index].argmax()} ({top[index]:.2f})", fontsize=9)
    figure.suptitle(f"The {n} of {pool} generated digits the classifier is least sure of")
    plotting.save_figure(figure, path)
    return figure


def _hits(probabilities, labels):
    """Whether each row's most likely class is its label: a boolean (N,) array, or a ValueError naming the mismatch."""
    probabilities = _probabilities(probabilities, "probabilities")
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(probabilities):
        raise ValueError(
            f"probabilities and labels must have the same length, received {len(probabilities)} and {len(labels)}"
        )
    return probabilities.argmax(axis=1) == labels


def _probabilities(probabilities, name, num_classes=None):
    """`probabilities` as an (N, K) array of rows summing to 1, or a ValueError naming it."""
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 2 or probabilities.shape[0] < 1:
        raise ValueError(f"{name} must be a 2-D array (N, K) with N >= 1, received shape {probabilities.shape}")
    if num_classes is not None and probabilities.shape[1] != num_classes:
        raise ValueError(f"{name} must have {num_classes} columns, received shape {probabilities.shape}")
    sums = probabilities.sum(axis=1)
    if not np.all(np.isfinite(probabilities)) or np.any(probabilities < 0) or np.any(abs(sums - 1) > _SUM_TOLERANCE):
        raise ValueError(
            f"{name} must hold non-negative rows summing to 1, received row sums from "
            f"{float(sums.min())!r} to {float(sums.max())!r} and minimum {float(probabilities.min())!r}"
        )
    return probabilities


def _reconstructions(model, images, labels=None, batch_size=BATCH_SIZE):
    """Reconstructions through the code means, float32 (N, 28, 28, 1); `labels`: for a conditional model."""
    images = plotting.check_images(images)
    if not getattr(model, "conditional", False):  # also any object with encode and decode
        return in_batches(lambda batch: model.decode(model.encode(batch)[0]), images, batch_size)
    return in_batches(
        lambda batch, digits: model.decode(model.encode(batch, digits)[0], digits),
        model.join_inputs(images, labels), batch_size,
    )


def _classify(classifier, images, batch_size=BATCH_SIZE):
    """The classifier's features and class probabilities of images, in batches: float32 (N, 128) and (N, 10)."""
    try:
        features_output = classifier.get_layer(FEATURES_LAYER).output
    except ValueError as error:
        raise ValueError(
            f"The classifier {classifier.name!r} has no layer named {FEATURES_LAYER!r}; "
            "load it with load_classifier or build it with build_classifier"
        ) from error
    feature_model = keras.Model(classifier.inputs[0], [features_output, classifier.outputs[0]])
    features, probabilities = in_batches(
        lambda batch: tuple(feature_model(batch, training=False)), plotting.check_images(images), batch_size
    )
    return features, probabilities.astype("float32")
