"""Tests for vae_keras.quality and vae_keras.classifier, and the quality and train-classifier commands."""

import json
import math

import matplotlib.figure
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

import vae_keras
from vae_keras import quality
from vae_keras.__main__ import main

NUM_IMAGES = 500


@pytest.fixture(scope="module")
def digit_classifier():
    return vae_keras.load_classifier()  # no argument: models/digit_classifier.keras


@pytest.fixture(scope="module")
def pretrained():
    return vae_keras.load_vae()


def scipy_frechet_distance(features_a, features_b):
    """The textbook formula, with SciPy's general matrix square root (an independent reference)."""
    mean_a, mean_b = features_a.mean(axis=0), features_b.mean(axis=0)
    covariance_a, covariance_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    root = scipy.linalg.sqrtm(covariance_a @ covariance_b)
    return float(
        np.sum((mean_a - mean_b) ** 2) + np.trace(covariance_a + covariance_b - 2 * np.real(root))
    )


def frechet_distance(features_a, features_b):
    """The package's Fréchet distance between two sets of features, as the quality report computes it."""
    return quality.frechet_distance_from_statistics(
        *quality.feature_statistics(features_a), *quality.feature_statistics(features_b)
    )


def random_covariance(rng, dimension):
    matrix = rng.normal(size=(dimension, dimension))
    return matrix @ matrix.T / dimension + 0.1 * np.eye(dimension)


# Fréchet distance


def test_frechet_distance_of_a_set_with_itself_is_zero():
    features = np.random.default_rng(0).normal(size=(1000, 16)) * 3 + 5
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_matches_scipy_on_correlated_gaussians():
    rng = np.random.default_rng(1)
    dimension = 8
    features_a = rng.multivariate_normal(rng.normal(size=dimension), random_covariance(rng, dimension), size=3000)
    features_b = rng.multivariate_normal(rng.normal(size=dimension), random_covariance(rng, dimension), size=2000)
    expected = scipy_frechet_distance(features_a, features_b)
    assert expected > 1.0
    assert frechet_distance(features_a, features_b) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(features_b, features_a) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_from_statistics_matches_the_closed_form_for_diagonal_covariances():
    # For diagonal covariances the distance is sum (m_a - m_b)^2 + sum (s_a - s_b)^2 (s: standard deviations).
    mean_a, mean_b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    std_a, std_b = np.array([1.0, 2.0, 0.5]), np.array([3.0, 0.5, 0.5])
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((std_a - std_b) ** 2)  # 1 + 6.25 + 4 + 2.25
    assert expected == pytest.approx(13.5)
    distance = quality.frechet_distance_from_statistics(mean_a, np.diag(std_a**2), mean_b, np.diag(std_b**2))
    assert distance == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_of_samples_approaches_the_gaussians_distance():
    rng = np.random.default_rng(2)
    mean_a, mean_b = np.zeros(4), np.array([1.0, 0.0, 0.0, 2.0])
    std_a, std_b = np.array([1.0, 1.0, 2.0, 1.0]), np.array([1.0, 3.0, 2.0, 0.5])
    features_a = mean_a + std_a * rng.standard_normal((200_000, 4))
    features_b = mean_b + std_b * rng.standard_normal((200_000, 4))
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((std_a - std_b) ** 2)  # 5 + 4.25
    assert frechet_distance(features_a, features_b) == pytest.approx(expected, rel=0.01)


def test_frechet_distance_of_a_shifted_set_is_the_squared_shift():
    features = np.random.default_rng(3).normal(size=(500, 5))
    shift = np.array([1.0, -2.0, 0.0, 0.5, 3.0])
    assert frechet_distance(features, features + shift) == pytest.approx(np.sum(shift**2), rel=1e-8)


@pytest.mark.filterwarnings("ignore:Matrix is singular:scipy.linalg.LinAlgWarning")
def test_frechet_distance_is_real_and_finite_for_singular_covariances():
    # Fewer samples than features, and a constant feature: singular covariances,
    # whose eigenvalues come out slightly negative by round-off.
    rng = np.random.default_rng(4)
    features_a = rng.normal(size=(10, 30))
    features_b = rng.normal(size=(12, 30)) + 0.5
    features_a[:, 0] = features_b[:, 0] = 1.0
    distance = frechet_distance(features_a, features_b)
    assert isinstance(distance, float) and math.isfinite(distance)
    assert distance == pytest.approx(scipy_frechet_distance(features_a, features_b), rel=1e-4)


def test_frechet_distance_rejects_bad_features():
    features = np.zeros((10, 3))
    with pytest.raises(ValueError, match=r"mean_b must have shape \(3,\) to match mean_a, received shape \(4,\)"):
        frechet_distance(features, np.zeros((10, 4)))
    with pytest.raises(ValueError, match=r"N >= 2.*\(1, 3\)"):
        quality.feature_statistics(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="shape \\(10,\\)"):
        quality.feature_statistics(np.zeros(10))
    with pytest.raises(ValueError, match="features holds values that are not finite"):
        quality.feature_statistics(np.full((10, 3), np.nan))
    with pytest.raises(ValueError, match=r"covariance_b must have shape \(2, 2\)"):
        quality.frechet_distance_from_statistics(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))


# Class histogram and its entropy


def test_class_histogram_of_labels_and_of_probabilities():
    labels = np.array([0, 0, 1, 3, 3, 3, 9, 9])
    expected = np.array([2, 1, 0, 3, 0, 0, 0, 0, 0, 2]) / 8
    np.testing.assert_allclose(quality.class_histogram(labels), expected)
    probabilities = np.eye(10)[labels] * 0.6 + 0.04  # the arg-max is the label
    np.testing.assert_allclose(quality.class_histogram(probabilities), expected)
    assert quality.class_histogram(np.array([1, 1, 0]), num_classes=2) == pytest.approx([1 / 3, 2 / 3])


def test_class_histogram_rejects_bad_labels():
    with pytest.raises(ValueError, match="from 0 to 10"):
        quality.class_histogram(np.array([0, 10]))
    with pytest.raises(ValueError, match="from -1 to 2"):
        quality.class_histogram(np.array([-1, 2]))
    with pytest.raises(ValueError, match="labels must be integers, received dtype float64"):
        quality.class_histogram(np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="empty"):
        quality.class_histogram(np.array([], dtype=int))
    with pytest.raises(ValueError, match=r"10 columns, received shape \(4, 3\)"):
        quality.class_histogram(np.full((4, 3), 1 / 3))


def test_histogram_entropy_known_values():
    assert quality.histogram_entropy(np.full(10, 0.1)) == pytest.approx(1.0)
    assert quality.histogram_entropy(np.eye(10)[3]) == pytest.approx(0.0)
    assert f"{quality.histogram_entropy(np.eye(10)[3]):.3f}" == "0.000"  # not "-0.000" in the report
    assert quality.histogram_entropy([0.5, 0.5, 0, 0]) == pytest.approx(math.log(2) / math.log(4))
    histogram = np.random.default_rng(5).dirichlet(np.ones(10))
    expected = scipy.stats.entropy(histogram) / math.log(10)
    assert quality.histogram_entropy(histogram) == pytest.approx(expected, rel=1e-10)


def test_histogram_entropy_rejects_what_is_not_a_histogram():
    with pytest.raises(ValueError, match="summing to 1, received sum 0.5"):
        quality.histogram_entropy([0.25, 0.25])
    with pytest.raises(ValueError, match="minimum -0.5"):
        quality.histogram_entropy([1.5, -0.5])
    with pytest.raises(ValueError, match=r"at least 2 classes, received shape \(1,\)"):
        quality.histogram_entropy([1.0])


# Classifier score, top probability, agreement


def test_classifier_score_is_one_for_identical_predictions():
    row = np.random.default_rng(6).dirichlet(np.ones(10))
    assert quality.classifier_score(np.tile(row, (100, 1))) == pytest.approx(1.0)
    # Confident, but always the same digit: also 1.
    assert quality.classifier_score(np.tile(np.eye(10)[7], (50, 1))) == pytest.approx(1.0)


def test_classifier_score_is_the_number_of_classes_for_confident_uniform_predictions():
    one_hot = np.eye(10)[np.arange(1000) % 10]
    assert quality.classifier_score(one_hot) == pytest.approx(10.0)
    assert quality.classifier_score(np.eye(4)[[0, 1, 2, 3, 0, 1, 2, 3]]) == pytest.approx(4.0)


def test_classifier_score_matches_scipy_kl_divergences():
    probabilities = np.random.default_rng(7).dirichlet(np.full(10, 0.3), size=400)
    marginal = probabilities.mean(axis=0)
    kl_divergences = [scipy.stats.entropy(row, marginal) for row in probabilities]
    expected = math.exp(np.mean(kl_divergences))
    assert 1.0 < expected < 10.0
    assert quality.classifier_score(probabilities) == pytest.approx(expected, rel=1e-10)


def test_classifier_score_rejects_rows_that_do_not_sum_to_one():
    with pytest.raises(ValueError, match="probabilities must hold non-negative rows summing to 1"):
        quality.classifier_score(np.full((3, 10), 0.2))
    with pytest.raises(ValueError, match=r"probabilities must be a 2-D array.*shape \(10,\)"):
        quality.classifier_score(np.full(10, 0.1))


def test_mean_top_probability_and_label_agreement():
    probabilities = np.array([[0.9, 0.1, 0.0], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4], [0.1, 0.1, 0.8]])
    assert quality.mean_top_probability(probabilities) == pytest.approx((0.9 + 0.5 + 0.4 + 0.8) / 4)
    assert quality.label_agreement(probabilities, [0, 1, 0, 2]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="same length, received 4 and 3"):
        quality.label_agreement(probabilities, [0, 1, 2])


# The shipped classifier


def test_build_classifier_is_small_and_has_a_features_layer():
    model = vae_keras.classifier.build_classifier()
    assert model.count_params() == 130_890
    assert model.get_layer("features").output.shape[1:] == (128,)
    assert model.output_shape == (None, 10)


def test_shipped_classifier_is_small_and_accurate(digit_classifier, mnist):
    assert vae_keras.config.CLASSIFIER_PATH.stat().st_size < 700 * 1024
    (_, _), (x_test, y_test) = mnist
    _, probabilities = quality._classify(digit_classifier, x_test)
    assert quality.label_agreement(probabilities, y_test) >= 0.985
    config = json.loads(vae_keras.config.CLASSIFIER_PATH.with_name("digit_classifier_config.json").read_text())
    assert config["test_accuracy"] == pytest.approx(quality.label_agreement(probabilities, y_test), abs=5e-4)


def test_classify_matches_predict_and_does_not_depend_on_the_batch_size(digit_classifier, small_mnist):
    (_, _), (x_test, _) = small_mnist
    features, probabilities = quality._classify(digit_classifier, x_test, batch_size=1000)
    assert features.shape == (len(x_test), 128) and probabilities.shape == (len(x_test), 10)
    np.testing.assert_allclose(probabilities, digit_classifier.predict(x_test, verbose=0), atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    features_small, _ = quality._classify(digit_classifier, x_test, batch_size=7)
    np.testing.assert_allclose(features_small, features, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="batch_size=0"):
        quality._classify(digit_classifier, x_test, batch_size=0)


def test_load_classifier_names_a_missing_or_corrupt_file(tmp_path):
    missing = tmp_path / "nothing.keras"
    with pytest.raises(FileNotFoundError, match=f"No classifier file at {missing}"):
        vae_keras.load_classifier(missing)
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match=f"{corrupt}: it is not a .keras model archive"):
        vae_keras.load_classifier(corrupt)
    with pytest.raises(ValueError, match="vae_mnist.keras holds no digit classifier"):
        vae_keras.load_classifier(vae_keras.PRETRAINED_MODEL_PATH)


def test_train_classifier_one_epoch_on_a_slice(tmp_path, small_mnist):
    path = tmp_path / "clf.keras"
    result = vae_keras.train_classifier(path, epochs=1, seed=3, data=small_mnist, verbose=0)
    assert result["path"] == path and path.is_file()
    history_lines = (tmp_path / "clf_history.csv").read_text().strip().splitlines()
    assert len(history_lines) == 2 and "val_accuracy" in history_lines[0]
    config = json.loads((tmp_path / "clf_config.json").read_text())
    assert config["seed"] == 3 and config["train_images"] == 1024
    loaded = vae_keras.load_classifier(path)
    (_, _), (x_test, y_test) = small_mnist
    _, probabilities = quality._classify(loaded, x_test)
    assert quality.label_agreement(probabilities, y_test) == pytest.approx(result["test_accuracy"], abs=1e-6)
    with pytest.raises(ValueError, match="epochs=0"):
        vae_keras.train_classifier(path, epochs=0, data=small_mnist)
    with pytest.raises(ValueError, match="clf.h5"):
        vae_keras.train_classifier(tmp_path / "clf.h5", data=small_mnist)


# Reconstructions and the report


class IdentityVAE:
    """A stand-in VAE whose code mean is the image itself and whose decoder returns it."""

    latent_dim = 784

    def encode(self, x):
        return x, np.zeros_like(x)

    def decode(self, z):
        return np.asarray(z)

    def generate(self, n, seed=0, batch_size=None):
        return np.random.default_rng(seed).random((n, 28, 28, 1), dtype="float32")

    def prior_labels(self, n):
        return None


def test_the_report_of_perfect_reconstructions_gives_them_the_accuracy(digit_classifier, small_mnist):
    (_, _), (x_test, y_test) = small_mnist
    accuracy = np.mean(digit_classifier.predict(x_test, verbose=0).argmax(axis=1) == y_test)
    sets = quality.quality_report(IdentityVAE(), digit_classifier, small_mnist, n=len(x_test), batch_size=100).sets
    assert sets["reconstructions"].label_agreement == pytest.approx(accuracy)
    assert sets["test images"].label_agreement == pytest.approx(accuracy)
    assert sets["reconstructions"].frechet_distance == pytest.approx(0.0, abs=1e-6)


def test_the_report_of_several_models_names_each_models_two_sets(digit_classifier, small_mnist, pretrained):
    (_, _), (x_test, _) = small_mnist
    n = len(x_test)
    one = quality.quality_report(IdentityVAE(), digit_classifier, small_mnist, n=n, batch_size=100).sets
    both = quality.quality_report({"copy": IdentityVAE(), "shipped": pretrained}, digit_classifier, small_mnist,
                                  n=n, batch_size=100).sets
    assert list(both) == ["test images", "training images", "copy: reconstructions", "copy: generated",
                          "shipped: reconstructions", "shipped: generated"]
    assert both["copy: reconstructions"].name == "copy: reconstructions"
    for name in ("reconstructions", "generated"):
        assert both[f"copy: {name}"].frechet_distance == pytest.approx(one[name].frechet_distance)
    assert both["shipped: reconstructions"].frechet_distance > both["copy: reconstructions"].frechet_distance


def test_reconstruct_goes_through_the_code_means(pretrained, small_mnist):
    (_, _), (x_test, _) = small_mnist
    images = x_test[:10]
    z_mean, _ = pretrained.encode(images)
    expected = np.asarray(pretrained.decode(z_mean))
    np.testing.assert_allclose(quality._reconstructions(pretrained, images, batch_size=3), expected, atol=1e-5)


@pytest.fixture(scope="module")
def report(pretrained, digit_classifier, mnist):
    return quality.quality_report(pretrained, digit_classifier, mnist, n=NUM_IMAGES, seed=0)


def test_quality_report_of_the_shipped_model(report):
    assert report.n == NUM_IMAGES and list(report.sets) == list(quality.SET_NAMES)
    sets = report.sets
    assert sets["test images"].frechet_distance == 0.0
    # The floor (real training digits) is closer to the test images than reconstructions, and those than samples.
    assert sets["training images"].frechet_distance < sets["reconstructions"].frechet_distance
    assert sets["reconstructions"].frechet_distance < sets["generated"].frechet_distance
    assert sets["test images"].label_agreement > 0.97
    assert 0.8 < sets["reconstructions"].label_agreement < sets["test images"].label_agreement
    assert sets["generated"].label_agreement is None
    assert sets["generated"].classifier_score < sets["test images"].classifier_score <= 10
    assert sets["generated"].histogram_entropy > 0.9  # every digit is generated
    for quality_of_set in sets.values():
        assert quality_of_set.class_histogram.sum() == pytest.approx(1.0)


# Some ReLU features are 0 for every image: singular covariances, which SciPy warns about.
@pytest.mark.filterwarnings("ignore:Matrix is singular:scipy.linalg.LinAlgWarning")
def test_quality_report_numbers_match_a_direct_computation(report, pretrained, digit_classifier, mnist):
    (_, _), (x_test, y_test) = mnist
    test_features, test_probabilities = quality._classify(digit_classifier, x_test[:NUM_IMAGES])
    generated_features, generated_probabilities = quality._classify(
        digit_classifier, pretrained.generate(NUM_IMAGES, seed=0)
    )
    generated = report.sets["generated"]
    assert generated.frechet_distance == pytest.approx(
        scipy_frechet_distance(generated_features.astype("float64"), test_features.astype("float64")), rel=1e-3
    )
    assert generated.classifier_score == pytest.approx(quality.classifier_score(generated_probabilities), rel=1e-4)
    assert report.sets["test images"].label_agreement == pytest.approx(
        np.mean(test_probabilities.argmax(axis=1) == y_test[:NUM_IMAGES])
    )
    reconstructions = quality._reconstructions(pretrained, x_test[:NUM_IMAGES])
    _, reconstruction_probabilities = quality._classify(digit_classifier, reconstructions)
    assert report.sets["reconstructions"].label_agreement == pytest.approx(
        quality.label_agreement(reconstruction_probabilities, y_test[:NUM_IMAGES])
    )


def test_quality_report_rejects_bad_arguments(pretrained, digit_classifier, small_mnist):
    with pytest.raises(ValueError, match="n=1$"):
        quality.quality_report(pretrained, digit_classifier, small_mnist, n=1)
    with pytest.raises(ValueError, match="from 2 to 256.*n=257"):
        quality.quality_report(pretrained, digit_classifier, small_mnist, n=257)
    with pytest.raises(ValueError, match="seed=-1"):
        quality.quality_report(pretrained, digit_classifier, small_mnist, n=10, seed=-1)


def test_format_report_as_text_and_markdown(report):
    text = quality.format_report(report)
    lines = text.splitlines()
    assert len(lines) == 6 and lines[0].startswith(f"Sample quality, {NUM_IMAGES} images per set")
    generated = report.sets["generated"]
    assert lines[5].startswith("generated") and f"{generated.frechet_distance:.2f}" in lines[5]
    assert len({len(line) for line in lines[1:]}) == 1  # aligned columns
    markdown = quality.format_report(report, markdown=True).splitlines()
    assert markdown[1].startswith("| set |") and markdown[2].startswith("| --- |")
    assert all(line.count("|") == 9 for line in markdown[1:])


def test_plot_least_confident(pretrained, digit_classifier):
    figure = quality.plot_least_confident(pretrained, digit_classifier, n=7, pool=200, seed=0)
    assert isinstance(figure, matplotlib.figure.Figure)
    shown = [axis for axis in figure.axes if axis.images]
    assert len(shown) == 7 and len(figure.axes) == 9  # a 3x3 grid, two places left empty
    assert all(axis.images[0].get_array().shape == (28, 28) for axis in shown)
    titles = [float(axis.get_title().split("(")[1].rstrip(")")) for axis in shown]
    assert titles == sorted(titles)  # least sure first
    _, probabilities = quality._classify(digit_classifier, pretrained.generate(200, seed=0))
    assert titles[0] == pytest.approx(probabilities.max(axis=1).min(), abs=0.005)
    with pytest.raises(ValueError, match=r"from 1 to 20 \(the pool\), received n=30"):
        quality.plot_least_confident(pretrained, digit_classifier, n=30, pool=20)


# The command line


def test_quality_command_names_a_missing_model(tmp_path, capsys):
    missing = tmp_path / "missing.keras"
    assert main(["quality", "--model", str(missing)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(missing) in error and error.startswith("error:")


def test_quality_command_names_a_missing_classifier(tmp_path, capsys):
    missing = tmp_path / "no_classifier.keras"
    assert main(["quality", "--classifier", str(missing)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(missing) in error


def test_quality_command_prints_the_table(capsys):
    assert main(["quality", "--n", "200", "--seed", "1"]) == 0
    output = capsys.readouterr().out
    assert "Sample quality, 200 images per set (seed 1)" in output
    for name in quality.SET_NAMES:
        assert f"\n{name} " in output


def test_digit_agreement_matches_a_count_per_label():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(10), size=300)
    labels = rng.integers(0, 10, size=300)
    labels[labels == 4] = 5  # no 4: NaN
    expected = [
        np.mean(probabilities[labels == d].argmax(axis=1) == d) if np.any(labels == d) else np.nan for d in range(10)
    ]
    np.testing.assert_allclose(quality.digit_agreement(probabilities, labels), expected, equal_nan=True)
    with pytest.raises(ValueError, match="same length"):
        quality.digit_agreement(probabilities, labels[:5])


def test_requested_digit_agreement_classifies_the_digits_asked_for(digit_classifier):
    model = vae_keras.ConditionalVAE(latent_dim=3, seed=0)
    labels = np.repeat(np.arange(10), 4)
    images = model.decode_codes(model.prior_codes(40, 5), labels)
    predicted = digit_classifier.predict(images, verbose=0).argmax(axis=1)
    expected = [np.mean(predicted[labels == d] == d) for d in range(10)]
    np.testing.assert_allclose(quality.requested_digit_agreement(model, digit_classifier, n=4, seed=5), expected)
    with pytest.raises(ValueError, match="needs a conditional VAE"):
        quality.requested_digit_agreement(vae_keras.VAE(latent_dim=2, seed=0), digit_classifier)


def test_quality_report_of_a_conditional_model_scores_generated_digits_against_the_digits_asked(
    digit_classifier, mnist
):
    model = vae_keras.ConditionalVAE(latent_dim=3, seed=0)
    report = quality.quality_report(model, digit_classifier, mnist, n=50, seed=1)
    images = model.decode_codes(model.prior_codes(50, 1), np.arange(50) % 10)
    predicted = digit_classifier.predict(images, verbose=0).argmax(axis=1)
    assert report.sets["generated"].label_agreement == pytest.approx(np.mean(predicted == np.arange(50) % 10))
    assert report.sets["reconstructions"].label_agreement is not None


def test_grey_fraction_counts_the_grey_share_of_the_inked_pixels(mnist):
    images = np.zeros((2, 28, 28, 1), "float32")
    images[0, :2, :5, 0] = [0.05, 0.5, 0.95, 0.2, 1.0]  # inked: 0.5, 0.95, 0.2, 1.0 (twice each); grey: 0.5, 0.2
    assert quality.grey_fraction(images) == pytest.approx(0.5)
    assert quality.grey_fraction(np.zeros((3, 28, 28))) == 0.0
    (_, _), (x_test, _) = mnist
    x = x_test[:500]
    expected = np.sum((x > 0.1) & (x < 0.9)) / np.sum(x > 0.1)
    assert quality.grey_fraction(x) == pytest.approx(expected)
    with pytest.raises(ValueError, match="ink=0.9, solid=0.1"):
        quality.grey_fraction(x, ink=0.9, solid=0.1)
