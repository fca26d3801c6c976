"""The example's figures (reconstructions, latent space, generated digits) and a few more, and `DecodedSamples`.

Each `plot_*` function returns a `matplotlib.figure.Figure` and, given a `path`, saves it as PNG (a name without
a suffix gets ".png"; parent folders are created). `write_generated` and `save_image` write image files.
"""

import math
import os
import statistics
from pathlib import Path

import keras
import matplotlib.colors
import matplotlib.figure
import numpy as np
from keras import ops
from PIL import Image

from vae_keras import analysis
from vae_keras.config import MNIST_IMAGE_SHAPE, NUM_CLASSES, REFERENCE_TEST_ELBO, check_int, check_number
from vae_keras.data import load_mnist
from vae_keras.files import write_atomically
from vae_keras.run_folder import read_history

# Resolution of the saved PNG files.
DPI = 120
# One distinct colour per digit: tab10 is made for classes; the reference's parula(10) is a sequential map.
DIGIT_COLORMAP = matplotlib.colors.ListedColormap(matplotlib.colormaps["tab10"].colors, name="digits")
# Boundaries half-way between the digits, so digit d gets the d-th colour.
DIGIT_NORM = matplotlib.colors.BoundaryNorm(np.arange(-0.5, 10.5), DIGIT_COLORMAP.N)
# How a digit is drawn: grey levels from black (0) to white (1), one image pixel per block.
IMAGE_STYLE = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0, "interpolation": "nearest"}


def plot_reconstructions(model, x, y=None, seed=None, path=None):
    """The reference's `visualizeReconstruction`: 4x5 panels `[original | reconstruction]`, two random images per digit.

    `y` None (your own images): 20 random images (all, if fewer). `seed` seeds the choice and the sampling noise.
    ValueError: `x` and `y` differ in length, or a digit 0-9 has no image in `y`.
    """
    return _reconstruction_panels(model, x, y, seed, path, "plot_reconstructions")


def plot_mean_vs_sample_reconstructions(model, x, y=None, seed=None, path=None):
    """`plot_reconstructions`' images (a seed gives its sample) as `[original | from the code mean | from a sample]`."""
    return _reconstruction_panels(model, x, y, seed, path, "plot_mean_vs_sample_reconstructions", through_mean=True)


def plot_latent_space(model, x, y=None, path=None):
    """The reference's `visualizeLatentSpace`: code means and log-variances in their first two principal components.

    Two scatters coloured by the digits `y` (None: one colour), PC 2 on the x axis, PC 1 on the y axis (pointing
    down). ValueError: lengths that differ, or fewer than 2 images.
    """
    from sklearn.decomposition import PCA
    x = check_images(x, model)
    y = None if y is None else _labels(y, x)
    if len(x) < 2:
        raise ValueError(f"plot_latent_space needs at least 2 images for a 2-component PCA, received {len(x)}")
    z_mean, z_log_var = analysis.encode(model, x, y)
    figure, axes = _subplots((12, 5.6), 1, 2)
    panels = [(z_mean, "Z_mu", "means"), (z_log_var, "Z_logvar", "log-variances")]
    for axis, (codes, symbol, title) in zip(axes, panels):
        scores = PCA(n_components=2).fit_transform(codes)
        _scatter_digits(figure, axis, scores[:, 1], scores[:, 0], y, s=5, linewidths=0, alpha=0.8)
        axis.invert_yaxis()
        axis.set_aspect("equal", adjustable="datalim")
        axis.set(xlabel=f"{symbol} PC 2", ylabel=f"{symbol} PC 1", title=f"Latent space: {title}")
    return save_figure(figure, path)


def plot_generated(model, n=25, seed=None, path=None, digit=None):
    """The reference's `generate`: `model.generate(n, seed, digit=digit)` in one tile of `ceil(sqrt(n))` columns.

    No gaps, empty places black. ValueError: `n` not a positive integer, or a `digit` `VAE.generate` refuses.
    """
    check_int("n", n)
    tile = tile_images(model.generate(n, seed=seed, digit=digit))
    size = min(2.0 + 0.04 * tile.shape[1], 10.0)
    figure, axis = _subplots((size, size * tile.shape[0] / tile.shape[1] + 0.4), layout=None)
    axis.imshow(tile, **IMAGE_STYLE)
    axis.set_axis_off()
    what = "digits" if model.image_shape == MNIST_IMAGE_SHAPE else "images"
    axis.set_title(f"Generated samples of {what}" if digit is None else f"Generated samples of the digit {digit}")
    return save_figure(figure, path)


def plot_generated_by_digit(model, n=10, seed=None, path=None):
    """For a conditional VAE: row d decodes the same `n` prior codes as the digit d, so a column shows one style."""
    _check_model(model, "plot_generated_by_digit", conditional=True)
    check_int("n", n)
    codes = np.tile(model.prior_codes(n, seed), (NUM_CLASSES, 1))
    digits = np.repeat(np.arange(NUM_CLASSES), n).astype("int32")
    tile = tile_images(model.decode_codes(codes, digits), columns=n)
    figure, axis = _subplots((0.55 * n + 1.0, 0.55 * NUM_CLASSES + 0.8))
    axis.imshow(tile, **IMAGE_STYLE)
    axis.set_yticks(14 + 28 * np.arange(NUM_CLASSES), labels=[str(digit) for digit in range(NUM_CLASSES)])
    axis.set_xticks(14 + 28 * np.arange(n), labels=[str(column + 1) for column in range(n)])
    axis.set(ylabel="digit asked for", xlabel="code (the same in every row)",
             title="A conditional VAE: each row asks for one digit")
    return save_figure(figure, path)


def plot_generated_side_by_side(models, n=16, seed=0, path=None):
    """The digits several models `{title: VAE}` generate from one seed, side by side (a conditional one: 0 to 9)."""
    if not models:
        raise ValueError("plot_generated_side_by_side needs at least one model, received none")
    check_int("n", n)
    figure, axes = _subplots((2.6 * len(models), 3.0), 1, len(models))
    for axis, (title, model) in zip(np.atleast_1d(axes), models.items()):
        axis.imshow(tile_images(model.generate(n, seed=seed)), **IMAGE_STYLE)
        axis.set_title(title, fontsize=10)
        axis.set_axis_off()
    return save_figure(figure, path)


def plot_image_rows(rows, title=None, path=None):
    """Sets of as many images `{label: images}` (each (N, H, W[, C])), one row a set, labelled on the left."""
    sets = [np.asarray(images, dtype="float32") for images in rows.values()]
    if not sets or any(images.shape != sets[0].shape for images in sets):
        raise ValueError(f"plot_image_rows needs sets of one shape, received {[images.shape for images in sets]}")
    count, height = sets[0].shape[:2]
    figure, axis = _subplots((0.8 * count + 1.2, 0.8 * len(sets) + 0.6))
    axis.imshow(tile_images(np.concatenate(sets), columns=count), **IMAGE_STYLE)
    axis.set_yticks(height / 2 + height * np.arange(len(sets)), labels=list(rows))
    axis.set(xticks=[], title=title)
    return save_figure(figure, path)


def plot_codes_against_prior(codes, y=None, path=None):
    """Codes `{title: (N, latent_dim) array}` side by side in their first two principal components, coloured by the
    digits `y`, with a dashed circle of radius 2 around the prior's mean: N(0, I) projected on any two orthonormal
    axes is N(0, I_2), which puts 1 - exp(-2) = 86% of its draws inside."""
    from matplotlib.patches import Circle
    from sklearn.decomposition import PCA
    figure, axes = _subplots((5.5 * len(codes), 4.8), 1, len(codes))
    for axis, (title, z) in zip(np.atleast_1d(axes), codes.items()):
        pca = PCA(n_components=2).fit(z)
        scores = pca.transform(z)
        _scatter_digits(figure, axis, scores[:, 0], scores[:, 1], y, s=4, linewidths=0)
        axis.add_patch(Circle(pca.transform(np.zeros((1, z.shape[1])))[0], 2, fill=False, linestyle="--"))
        axis.set_aspect("equal", adjustable="datalim")
        axis.set(title=title, xlabel="PC 1", ylabel="PC 2")
    return save_figure(figure, path)


def plot_sorted_kl(kls, threshold=None, path=None):
    """Models' KL per latent dimension `{label: kl}`, each sorted from largest to smallest.

    Dimensions below `threshold` (dashed; None: `analysis.ACTIVE_THRESHOLD`) are inactive: the encoder leaves them
    at the prior, whatever the image (posterior collapse where all are).
    """
    if not kls:
        raise ValueError("plot_sorted_kl needs at least one array, received none")
    threshold = analysis.ACTIVE_THRESHOLD if threshold is None else threshold
    figure, axis = _subplots((8, 4))
    for label, kl in kls.items():
        kl = np.asarray(kl, dtype="float64")
        if kl.ndim != 1 or len(kl) == 0:
            raise ValueError(f"kls[{label!r}] must be a non-empty 1-D array, received shape {kl.shape}")
        active = int(analysis.active_units(kl, threshold).sum())
        # A log axis cannot show 0: values are drawn no lower than a hundredth of the threshold.
        axis.plot(np.arange(1, len(kl) + 1), np.clip(np.sort(kl)[::-1], threshold / 100, None), marker="o",
                  markersize=3, label=f"{label}: {active} active")
    axis.axhline(threshold, color="black", linestyle="--", linewidth=0.8)
    axis.set_yscale("log")
    axis.set(xlabel="latent dimensions, largest KL first", ylabel="mean KL (nats, log scale)",
             title=f"KL per latent dimension (dashed: {threshold:g} nats, the active-unit threshold)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=9)
    return save_figure(figure, path)


def plot_digit_styles(model, x, y, n=6, seed=None, path=None):
    """For a conditional VAE: `n` test images (drawn with `seed`), each encoded with its digit, decoded as every digit.

    A conditional VAE's code need not hold the digit, only how it is written: each label writes it in that style.
    """
    _check_model(model, "plot_digit_styles", conditional=True)
    x = check_images(x, model)
    y = _labels(y, x)
    check_int("n", n, maximum=len(x), maximum_is="the images given")
    chosen = np.sort(np.random.default_rng(seed).choice(len(x), size=n, replace=False))
    z_mean, _ = analysis.encode(model, x[chosen], y[chosen])
    codes = np.repeat(z_mean, NUM_CLASSES, axis=0)
    digits = np.tile(np.arange(NUM_CLASSES), n).astype("int32")
    decoded = model.decode_codes(codes, digits).reshape(n, NUM_CLASSES, 28, 28, 1)
    rows = np.concatenate([x[chosen][:, None], decoded], axis=1).reshape(-1, 28, 28, 1)
    tile = tile_images(rows, columns=NUM_CLASSES + 1)
    figure, axis = _subplots((7.4, 0.62 * n + 0.9))
    axis.imshow(tile, **IMAGE_STYLE)
    axis.axvline(27.5, color="tab:red", linewidth=1.5)
    axis.set_xticks(14 + 28 * np.arange(NUM_CLASSES + 1), labels=["test image", *map(str, range(NUM_CLASSES))],
                    fontsize=8)
    axis.set_yticks([])
    axis.set(xlabel="decoded with the digit", title="One code, every digit: the code holds the style")
    return save_figure(figure, path)


def plot_latent_plane(model, x, y, n=20, path=None, digit=None):
    """For a 2-D latent space: the test codes coloured by digit beside the decoder's map of the plane itself.

    The map decodes an n x n grid at the N(0, 1) quantiles 0.5/n ... 1 - 0.5/n of each axis (as keras.io draws it),
    so every tile stands for an equal share of the prior; both panels have z_1 to the right and z_2 upwards, on one
    scale. A conditional model draws the map as `digit` (required there).
    """
    if model.latent_dim != 2:
        raise ValueError(f"plot_latent_plane draws a 2-D latent space, received a model with latent_dim="
                         f"{model.latent_dim}; plot_latent_space and plot_latent_grid project other sizes onto two "
                         "principal directions")
    check_int("n", n, minimum=2)
    if model.conditional and digit is None:
        raise ValueError("plot_latent_plane of a conditional model draws the plane as one digit: pass digit=0..9")
    x = check_images(x, model)
    y = None if y is None else _labels(y, x)
    z_mean, _ = analysis.encode(model, x, y)
    values = np.array([statistics.NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)])
    z1, z2 = np.meshgrid(values, values[::-1])  # rows from the top: z_2 decreasing
    codes = np.stack([z1.ravel(), z2.ravel()], axis=1).astype("float32")
    tile = tile_images(model.decode_codes(codes, model.prior_labels(len(codes), digit)), columns=n)
    half = 0.5 * (values[1] - values[0])
    limit = float(max(np.abs(values).max() + half, np.abs(z_mean).max()))
    figure, (left, right) = _subplots((13, 6.2), 1, 2)
    _scatter_digits(figure, left, z_mean[:, 0], z_mean[:, 1], y, s=2, alpha=0.7)
    left.set(xlim=(-limit, limit), ylim=(-limit, limit), xlabel="z_1", ylabel="z_2", aspect="equal",
             title="Test images' code means")
    right.imshow(tile, **IMAGE_STYLE, extent=(values[0] - half, values[-1] + half, values[0] - half, values[-1] + half))
    right.set(xlim=(-limit, limit), ylim=(-limit, limit), xlabel="z_1", ylabel="z_2",
              title=f"The decoder's map: {n} x {n} codes at the prior's quantiles")
    return save_figure(figure, path)


def plot_interpolation(model, x_start, x_end, steps=10, path=None):
    """For an unconditional VAE: the start image, `steps` codes decoded on the line between the means, the end image."""
    _check_model(model, "plot_interpolation", conditional=False)
    check_int("steps", steps, minimum=2)  # both ends are decoded
    pair = np.concatenate([check_images(np.asarray(x_start, "float32")[None], model, "x_start"),
                           check_images(np.asarray(x_end, "float32")[None], model, "x_end")])
    z_mean, _ = analysis.encode(model, pair)
    t = np.linspace(0.0, 1.0, steps, dtype="float32")[:, None]
    decoded = ops.convert_to_numpy(model.decode((1.0 - t) * z_mean[0] + t * z_mean[1]))
    images = [pair[0], *decoded, pair[1]]
    titles = ["start", *(f"t={value:.2f}" for value in t[:, 0]), "end"]
    figure, axes = _subplots((1.0 * len(images), 1.75), 1, len(images), layout=None)
    for axis, image, title in zip(axes, images, titles):
        axis.imshow(_drawable(image), **IMAGE_STYLE)
        axis.set_title(title, fontsize=8)
        axis.set_axis_off()
    figure.suptitle("Interpolating between the means of two codes")
    return save_figure(figure, path)


def plot_latent_grid(model, x, n=15, span=2.5, path=None):
    """Decoded codes on an n x n grid reaching `span` standard deviations along the means' two principal directions.

    For an unconditional VAE; laid out as the means panel of `plot_latent_space`: PC 2 to the right, PC 1 downwards.
    """
    from sklearn.decomposition import PCA
    _check_model(model, "plot_latent_grid", conditional=False)
    check_int("n", n)
    check_number("span", span)
    x = check_images(x, model)
    if len(x) < 2:
        raise ValueError(f"plot_latent_grid needs at least 2 images for a 2-component PCA, received {len(x)}")
    z_mean, _ = analysis.encode(model, x)
    pca = PCA(n_components=2).fit(z_mean)
    directions = pca.components_ * np.sqrt(pca.explained_variance_)[:, None]
    values = np.linspace(-span, span, n)
    a, b = np.meshgrid(values, values, indexing="ij")  # a: rows (PC 1), b: columns (PC 2)
    codes = pca.mean_ + a.reshape(-1, 1) * directions[0] + b.reshape(-1, 1) * directions[1]
    tile = tile_images(ops.convert_to_numpy(model.decode(codes.astype("float32"))), columns=n)
    figure, axis = _subplots((7.5, 7.5), layout=None)
    axis.imshow(tile, **IMAGE_STYLE)
    labels = [f"{values[0]:.1f}", f"{values[n // 2]:.1f}", f"{values[-1]:.1f}"]
    height, width = model.image_shape[:2]
    axis.set_xticks([width * i + width // 2 for i in (0, n // 2, n - 1)], labels=labels)
    axis.set_yticks([height * i + height // 2 for i in (0, n // 2, n - 1)], labels=labels)
    axis.set(xlabel="Z_mu PC 2 (standard deviations)", ylabel="Z_mu PC 1 (standard deviations)",
             title="Decoded codes along the means' two principal directions")
    return save_figure(figure, path)


def plot_training_curve(history, path=None, reference=REFERENCE_TEST_ELBO):
    """The test and training ELBO loss per epoch beside the `reference`'s test ELBO (None or empty: not plotted).

    `history`: columns as `run_folder.read_history` returns (`epoch` from 1, `val_elbo`, optionally `elbo`), or the
    path of a `history.csv`. The y axis is zoomed in: the first epochs' values (about 28) lie above the plot.
    """
    if isinstance(history, (str, Path)):
        history = read_history(history)
    for column in ("epoch", "val_elbo"):
        if column not in history:
            raise ValueError(f"The history has no {column!r} column (columns: {', '.join(history)}); "
                             "the test ELBO is logged as 'val_elbo' when fit is given validation data")
    epochs = np.asarray(history["epoch"], dtype=int)
    if len(epochs) == 0:
        raise ValueError("The history holds no epochs")
    test_elbo = np.asarray(history["val_elbo"], dtype=float)
    reference = np.asarray(reference if reference is not None else [], dtype=float)
    figure, axis = _subplots((8, 4.8))
    axis.plot(epochs, test_elbo, color="tab:blue", marker=".", label="Keras, test ELBO")
    plotted = [test_elbo]
    if "elbo" in history:
        train_elbo = np.asarray(history["elbo"], dtype=float)
        axis.plot(epochs, train_elbo, color="tab:blue", linestyle="--", alpha=0.7, label="Keras, training ELBO")
        plotted.append(train_elbo)
    if len(reference):
        axis.plot(np.arange(1, len(reference) + 1), reference, linestyle="none", marker="o", markersize=4,
                  markerfacecolor="none", color="black", label="MATLAB reference, test ELBO")
        plotted.append(reference)
    values = np.concatenate(plotted)
    values = values[np.isfinite(values)]
    if len(values):
        epoch_two = [series[min(1, len(series) - 1)] for series in (test_elbo, reference) if len(series)]
        epoch_two = [value for value in epoch_two if np.isfinite(value)] or [values.max()]
        lower, upper = values.min() - 0.5, max(epoch_two) + 0.5
        if upper > lower:
            axis.set_ylim(lower, upper)
    axis.set_xlim(0.5, max(epochs.max(), len(reference)) + 0.5)
    axis.set(xlabel="Epoch", ylabel="ELBO loss", title="ELBO loss per epoch")
    axis.grid(alpha=0.3)
    axis.legend()
    return save_figure(figure, path)


def plot_kl_per_dimension(kl, threshold=None, path=None):
    """Bars of each latent dimension's KL (`analysis.kl_per_dimension`), those above `threshold` (dashed) coloured."""
    kl = np.asarray(kl, dtype="float64")
    if kl.ndim != 1 or len(kl) == 0:
        raise ValueError(f"kl must be a non-empty 1-D array (one value per dimension), received shape {kl.shape}")
    threshold = analysis.ACTIVE_THRESHOLD if threshold is None else threshold
    active = analysis.active_units(kl, threshold)
    figure, axis = _subplots((8, 3.6))
    axis.bar(np.arange(len(kl)), kl, color=np.where(active, "tab:blue", "tab:gray"))
    axis.axhline(threshold, color="black", linestyle="--", linewidth=0.8)
    axis.set_xticks(np.arange(len(kl)))
    axis.set(xlabel="latent dimension", ylabel="mean KL (nats)",
             title=f"KL per latent dimension: {int(active.sum())} of {len(kl)} active (KL > {threshold:g} nats)")
    axis.grid(axis="y", alpha=0.3)
    return save_figure(figure, path)


def plot_iwae_bound(ks, bounds, elbo=None, path=None):
    """The importance-weighted `bounds` (`analysis.iwae_bound`) against the samples `ks` (log axis); `elbo` dashed."""
    ks, bounds = np.asarray(ks, dtype="float64"), np.asarray(bounds, dtype="float64")
    if ks.ndim != 1 or ks.shape != bounds.shape or len(ks) == 0:
        raise ValueError("ks and bounds must be 1-D, non-empty and of the same length, "
                         f"received shapes {ks.shape} and {bounds.shape}")
    if np.any(ks < 1):
        raise ValueError(f"every k must be >= 1, received ks={ks.tolist()}")
    figure, axis = _subplots((6.4, 4))
    axis.plot(ks, bounds, marker="o", color="tab:blue", label="IWAE bound, -log p(x) estimate")
    for k, bound in zip(ks, bounds):
        axis.annotate(f"{bound:.2f}", (k, bound), textcoords="offset points", xytext=(0, 6), ha="center")
    if elbo is not None:
        axis.axhline(elbo, color="tab:gray", linestyle="--", label=f"ELBO loss ({elbo:.2f})")
    axis.set_xscale("log")
    axis.margins(x=0.1, y=0.15)  # room for the labels above the points
    axis.set(xlabel="samples per image k", ylabel="loss (nats per image)",
             title="The importance-weighted bound tightens with k")
    axis.grid(alpha=0.3)
    axis.legend()
    return save_figure(figure, path)


def save_all_figures(model, out_dir, history_path=None, seed=0, data_dir=None, data=None):
    """Writes notebook 4's main figures as PNG files into `out_dir`; returns their paths.

    `reconstructions`, `latent_space`, `generated`, `interpolation`, `latent_grid`, `training_curve` (given
    `history_path`), `latent_plane` (2-D model); a conditional model: `generated` by digit, `digit_styles` replacing
    `interpolation` and `latent_grid`. `data`: `(x_test, y_test)` (`y_test` None: unlabelled) instead of MNIST's.
    """
    out_dir = Path(out_dir)
    history = read_history(history_path) if history_path is not None else None
    x_test, y_test = data if data is not None else load_mnist(data_dir)[1]
    rng = np.random.default_rng(seed)
    if y_test is None:
        start, end = rng.choice(len(x_test), size=2, replace=False)
    else:  # a 3 and an 8, drawn in that order
        start, end = (rng.choice(np.flatnonzero(y_test == digit)) for digit in (3, 8))
    figures = {"reconstructions.png": lambda: plot_reconstructions(model, x_test, y_test, seed=seed),
               "latent_space.png": lambda: plot_latent_space(model, x_test, y_test)}
    if model.conditional:
        figures["generated.png"] = lambda: plot_generated_by_digit(model, n=10, seed=seed)
        figures["digit_styles.png"] = lambda: plot_digit_styles(model, x_test, y_test, seed=seed)
    else:
        figures["generated.png"] = lambda: plot_generated(model, n=25, seed=seed)
        figures["interpolation.png"] = lambda: plot_interpolation(model, x_test[start], x_test[end])
        figures["latent_grid.png"] = lambda: plot_latent_grid(model, x_test)
    if model.latent_dim == 2 and not model.conditional:
        figures["latent_plane.png"] = lambda: plot_latent_plane(model, x_test, y_test)
    if history is not None:  # the reference's curve is MNIST's
        reference = REFERENCE_TEST_ELBO if model.image_shape == MNIST_IMAGE_SHAPE else None
        figures["training_curve.png"] = lambda: plot_training_curve(history, reference=reference)
    for name, make_figure in figures.items():
        save_figure(make_figure(), out_dir / name)
    return [out_dir / name for name in figures]


# The most images `write_generated` writes: a million, in a tile of at most 28,000 x 28,000 grey pixels' worth.
MAX_GENERATED = 1_000_000
_TILE_SIDE = 28_000
MAX_TILE_VALUES = _TILE_SIDE * _TILE_SIDE
# A tile narrower than this many pixels is enlarged by a whole factor, so 25 digits are not a thumbnail.
_MIN_TILE_WIDTH = 560
# The image files `save_image` and `write_generated` write, by suffix.
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def write_generated(model, n, path, seed=None, batch_size=1_000, digit=None):
    """Writes `model.generate(n, seed, digit=digit)` as one PNG or JPEG tile; returns `(path, (width, height))`.

    Laid out as `plot_generated`'s tile, one image pixel per file pixel (whole-number enlarged below 560 pixels wide);
    decoded a row at a time into an 8-bit image, written whole or not at all. `n` from 1 to `MAX_GENERATED`.
    """
    height, width, channels = model.decoder.output_shape[1:]
    check_int("n", n, maximum=min(MAX_GENERATED, MAX_TILE_VALUES // (height * width * channels)),
              maximum_is=f"{height}x{width}x{channels} images in a tile of at most {_TILE_SIDE:,} x {_TILE_SIDE:,} "
              "grey pixels' worth")
    image_file(path)  # refused before any decoding
    labels = model.prior_labels(n, digit)
    columns = math.ceil(math.sqrt(n))
    scale = max(1, _MIN_TILE_WIDTH // (width * columns))
    size = (width * columns * scale, height * math.ceil(n / columns) * scale)
    tile = Image.new("RGB" if channels == 3 else "L", size)
    rng = np.random.default_rng(seed)  # drawn row by row: the same codes as prior_codes(n, seed)
    for start in range(0, n, columns):
        codes = rng.standard_normal((min(columns, n - start), model.latent_dim)).astype("float32")
        digits = None if labels is None else labels[start : start + columns]
        strip = tile_images(model.decode_codes(codes, digits, batch_size), columns=columns)
        tile.paste(Image.fromarray(grey_levels(strip, scale)), (0, start // columns * height * scale))
    return save_image(tile, path), tile.size


def tile_images(images, columns=None):
    """Lays images (N, H, W[, 1 or 3]) out in one array, `columns` a row (None: `ceil(sqrt(N))`), 0 after the last."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[3] == 1:
        images = images[..., 0]
    count, height, width = images.shape[:3]
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    tile = np.zeros((rows * height, columns * width, *images.shape[3:]), dtype=images.dtype)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        tile[row * height : (row + 1) * height, column * width : (column + 1) * width] = image
    return tile


def grey_levels(image, scale=1):
    """Values in [0, 1] of shape (H, W), (H, W, 1) or (H, W, 3) as 8-bit levels, each repeated `scale` x `scale`."""
    image = np.asarray(image)
    image = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype("uint8").repeat(scale, 0).repeat(scale, 1)


def check_images(x, model=None, name="the images"):
    """`x` as float32 images (N, H, W, C) of the shape `model` takes (no model: MNIST's), or a ValueError."""
    shape = MNIST_IMAGE_SHAPE if model is None else model.image_shape
    x = np.asarray(x, dtype="float32")
    if x.ndim == 3 and shape[2] == 1:
        x = x[..., None]
    if x.ndim != 4 or x.shape[1:] != shape:
        expected = f"(N, {', '.join(map(str, shape))})" + (f" or (N, {shape[0]}, {shape[1]})" if shape[2] == 1 else "")
        raise ValueError(f"Expected {name} of shape {expected}, received shape {x.shape}")
    return x


def output_path(path):
    """Where a figure asked for at `path` is written: a name without a suffix gets ".png"."""
    path = Path(path)
    return path.with_name(path.name + ".png") if not path.suffix else path


def image_file(path):
    """`(output_path(path), its Pillow format)`, or a ValueError for a folder or a suffix not in `IMAGE_FORMATS`."""
    if str(path).endswith(("/", os.sep)) or Path(path).name in ("", "..") or Path(path).is_dir():
        raise ValueError(f"{str(path)!r} is a folder; give a file name such as generated.png")
    path = output_path(path)
    if path.suffix.lower() not in IMAGE_FORMATS:
        raise ValueError(f"{str(path)!r} has the suffix {path.suffix!r}; write one of {', '.join(IMAGE_FORMATS)}")
    return path, IMAGE_FORMATS[path.suffix.lower()]


def save_figure(figure, path):
    """Writes a figure as a PNG file (see `output_path`), whole or not at all (`path` None: not); returns the figure."""
    if path is not None:
        path = output_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=DPI, bbox_inches="tight"))
    return figure


def save_image(array, path):
    """Writes `grey_levels(array)` (or a `PIL.Image`) as `image_file` says, whole or not at all; returns its path."""
    image = array if isinstance(array, Image.Image) else Image.fromarray(grey_levels(array))
    path, file_format = image_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"quality": 95} if file_format == "JPEG" else {}
    return write_atomically(path, lambda temporary: image.save(temporary, file_format, **options))


def _reconstruction_panels(model, x, y, seed, path, function, through_mean=False):
    """`plot_reconstructions`' figure; `through_mean`: `plot_mean_vs_sample_reconstructions`'."""
    x = check_images(x, model)
    rng = np.random.default_rng(seed)
    if y is None:
        digits, originals = None, x[np.sort(rng.choice(len(x), size=min(20, len(x)), replace=False))]
    else:
        by_digit = [np.flatnonzero(_labels(y, x) == digit) for digit in range(10)]
        missing = [digit for digit, indices in enumerate(by_digit) if len(indices) == 0]
        if missing:
            raise ValueError(f"{function} needs at least one image of each digit 0-9; "
                             f"y has no image of digit(s) {', '.join(map(str, missing))}")
        digits = np.array([digit for _ in range(2) for digit in range(10)], dtype="int32")
        originals = x[np.array([rng.choice(by_digit[digit]) for digit in digits])]
    with model.sampling.seeded(seed):
        inputs = originals if digits is None else model.join_inputs(originals, digits)
        image_sets = [originals, ops.convert_to_numpy(model(inputs, training=False))]
    if through_mean:
        z_mean, _ = model.encode(originals, digits)
        image_sets.insert(1, ops.convert_to_numpy(model.decode(z_mean, digits)))
        figsize, title = (12, 6.4), "Original | decoded from the mean | decoded from a sample"
    else:
        figsize, title = (10, 6.4), "Example ground truth image vs. reconstructed image"
    figure, axes = _subplots(figsize, 4, 5, layout=None)
    for axis in axes.flat:  # fewer than 20 images leave the last panels empty
        axis.set_axis_off()
    separator = np.ones((originals.shape[1], 1, originals.shape[3]), dtype="float32")
    for axis, digit, *images in zip(axes.flat, [None] * len(originals) if digits is None else digits, *image_sets):
        pieces = [piece for image in images for piece in (separator, image)][1:]
        axis.imshow(_drawable(np.concatenate(pieces, axis=1)), **IMAGE_STYLE)
        if digit is not None:
            axis.set_title(str(digit))
    figure.suptitle(title)
    return save_figure(figure, path)


def _subplots(figsize, rows=1, columns=1, layout="constrained"):
    """A figure of `figsize` inches and its axes, as `matplotlib.pyplot.subplots` returns them (without pyplot)."""
    figure = matplotlib.figure.Figure(figsize=figsize, layout=layout)
    return figure, figure.subplots(rows, columns)


def _scatter_digits(figure, axis, horizontal, vertical, y, **style):
    """A scatter coloured by the digits `y`, with a colour bar; in one colour where `y` is None."""
    colours = {"c": "tab:blue"} if y is None else {"c": y, "cmap": DIGIT_COLORMAP, "norm": DIGIT_NORM}
    points = axis.scatter(horizontal, vertical, **style, **colours)
    if y is not None:
        colorbar = figure.colorbar(points, ax=axis, ticks=range(10), label="digit")
        colorbar.set_ticklabels([str(digit) for digit in range(10)])
        colorbar.minorticks_off()


def _drawable(image):
    """One image (H, W, C) as imshow draws it: (H, W) grey, or (H, W, 3) colour."""
    return image[..., 0] if image.shape[-1] == 1 else image


def _labels(y, x):
    y = np.asarray(y).reshape(-1)
    if len(y) != len(x):
        raise ValueError(f"x and y must have the same length, received {len(x)} images and {len(y)} labels")
    return y


def _check_model(model, function, conditional):
    """A ValueError unless `model` is conditional or unconditional, as `function` needs."""
    if conditional and not model.conditional:
        raise ValueError(f"{function} draws a conditional VAE's digits; this model is unconditional")
    if not conditional and model.conditional:
        raise ValueError(f"{function} decodes codes without digits, for an unconditional VAE; "
                         "for a conditional one see plot_digit_styles")


class DecodedSamples(keras.callbacks.Callback):
    """A Keras callback: decodes the same `n` codes, drawn once from N(0, I) with `seed`, after every epoch (and
    before the first, if untrained), to watch a model learn; with `path`, rewrites that PNG strip after each epoch.

    Attributes: `codes` (n, latent_dim) once training has begun; `epochs`, the epoch after which each row was
    decoded (0: before training); `images`, one (n, H, W, C) float32 array per entry of `epochs`.
    """

    def __init__(self, n=10, seed=0, path=None):
        super().__init__()
        self.n = int(check_int("n", n))
        self.seed = seed
        self.path = None if path is None else Path(path)
        self.codes = self.digits = None
        self.epochs, self.images = [], []

    def on_train_begin(self, logs=None):
        if self.codes is None:
            self.codes = self.model.prior_codes(self.n, self.seed)
            self.digits = self.model.prior_labels(self.n)  # a conditional model: 0, 1, ..., 9, 0, ...
        optimizer = getattr(self.model, "optimizer", None)
        untrained = optimizer is None or int(ops.convert_to_numpy(optimizer.iterations)) == 0
        if untrained and 0 not in self.epochs:
            self._record(0)

    def on_epoch_end(self, epoch, logs=None):
        self._record(epoch + 1)
        if self.path is not None:
            self.save_strip(self.path)

    def strip(self, epochs=None):
        """The kept images of `epochs` (None: all, in the order recorded) as one float32 array in [0, 1]: one row
        per epoch, one column per code. A ValueError if nothing, or not every epoch asked for, was recorded."""
        rows = self._rows(epochs)
        return tile_images(np.concatenate([self.images[row] for row in rows]), columns=self.n)

    def save_strip(self, path, epochs=None):
        """Writes `strip(epochs)` as a grey PNG, one image pixel per file pixel; returns the path written."""
        return save_image(self.strip(epochs), path)

    def plot(self, epochs=None, path=None):
        """A figure of the strip with each row labelled by its epoch; with 50 epochs a selection such as
        `[0, 1, 2, 3, 5, 10, 20, 50]` reads better."""
        rows = self._rows(epochs)
        tile = self.strip(epochs)
        width = min(1.0 + 0.6 * self.n, 12.0)
        height = width * tile.shape[0] / tile.shape[1] + 0.6
        figure, axis = _subplots((width, height))
        axis.imshow(tile, **IMAGE_STYLE)
        axis.set_yticks(14 + 28 * np.arange(len(rows)), labels=[str(self.epochs[row]) for row in rows])
        axis.set_xticks([])
        axis.set(ylabel="epoch", title=f"The same {self.n} codes decoded after each epoch")
        return save_figure(figure, path)

    def _record(self, epoch):
        self.epochs.append(epoch)
        decoded = self.model.decode(self.codes, self.digits)
        self.images.append(np.asarray(ops.convert_to_numpy(decoded), dtype="float32"))

    def _rows(self, epochs):
        """The indices into `self.images` of the requested epochs."""
        if not self.images:
            raise ValueError("No images recorded yet: the callback records them during fit")
        if epochs is None:
            return list(range(len(self.epochs)))
        missing = [epoch for epoch in epochs if epoch not in self.epochs]
        if missing:
            raise ValueError(f"Epoch(s) {missing} were not recorded; recorded: {self.epochs}")
        return [self.epochs.index(epoch) for epoch in epochs]
