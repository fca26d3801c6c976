"""The sentences of notebooks/04_visualization.ipynb, checked against the shipped model's figures.

Notebook 4 describes, by default, the figures of `models/vae_mnist.keras` (the ones in docs/figures/). Each test
draws a figure as the notebook does (same function, same seed), takes the images or points back out of the
Matplotlib figure, and checks what the text says of them; `models/digit_classifier.keras` reads the digits.
"""

import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops

import vae_keras
from vae_keras import analysis, plotting, quality

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "04_visualization.ipynb"
SIDE = 28


@pytest.fixture(scope="module")
def model():
    return vae_keras.load_vae()  # models/vae_mnist.keras


@pytest.fixture(scope="module")
def digit_classifier():
    return vae_keras.load_classifier()  # models/digit_classifier.keras


@pytest.fixture(scope="module")
def test_set():
    return vae_keras.load_mnist()[1]


@pytest.fixture(scope="module")
def codes(model, test_set):
    """The code means and log-variances of the 10,000 test images, as the notebook's full run encodes them."""
    return analysis.encode(model, test_set[0])


def classify(digit_classifier, images):
    """The classifier's guess and its probability for each (H, W) or (H, W, 1) image."""
    images = np.asarray(images, "float32").reshape(-1, SIDE, SIDE, 1)
    _, probabilities = quality._classify(digit_classifier, images)
    return probabilities.argmax(axis=1), probabilities.max(axis=1)


def panel_images(figure):
    """The image each axis of a figure shows, as a NumPy array, axis by axis."""
    return [np.asarray(axis.images[0].get_array()) for axis in figure.axes if axis.images]


def tiles(tile, columns):
    """A `tile_images` array cut back into its (rows, columns, 28, 28) images."""
    rows = tile.shape[0] // SIDE
    return tile.reshape(rows, SIDE, columns, SIDE).transpose(0, 2, 1, 3)


def notebook_cells():
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]


# The notebook itself


def test_the_shipped_model_is_the_default_behind_one_switch():
    code = ["".join(cell["source"]) for cell in notebook_cells() if cell["cell_type"] == "code"]
    switches = [source for source in code if re.search(r"^USE_MY_MODEL = ", source, re.M)]
    assert len(switches) == 1 and re.search(r"^USE_MY_MODEL = False\b", switches[0], re.M)
    assert "PRETRAINED_MODEL_PATH" in switches[0] and "PRETRAINED_HISTORY_PATH" in switches[0]
    assert 'runs" / "notebook" / "vae.keras"' in switches[0] and "FileNotFoundError" in switches[0]


def test_notebook_text_is_short_and_its_code_fits_the_cell():
    cells = notebook_cells()
    words = sum(len("".join(cell["source"]).split()) for cell in cells if cell["cell_type"] == "markdown")
    assert words <= 1_500, f"notebook 4's markdown has {words} words"
    long = [line for cell in cells if cell["cell_type"] == "code"
            for line in "".join(cell["source"]).splitlines() if len(line) > 88]
    assert not long, f"code lines over 88 characters: {long}"
    last = "".join(cells[-1]["source"])
    assert "notebook 5" in last.lower() and "ends the walk" not in last
    assert not any("plot_training_curve" in "".join(cell["source"]) for cell in cells)


def test_the_quality_table_is_shown_as_markdown():
    code = "".join("".join(cell["source"]) for cell in notebook_cells() if cell["cell_type"] == "code")
    assert "format_report(report, markdown=True)" in code and "display(Markdown(" in code


# Reconstructions, through a sample and through the mean


def test_five_reconstructions_come_back_as_another_digit(model, digit_classifier, test_set):
    x_test, y_test = test_set
    panels = panel_images(plotting.plot_reconstructions(model, x_test, y_test, seed=0))
    assert len(panels) == 20
    guesses, probabilities = classify(digit_classifier, [panel[:, SIDE + 1:] for panel in panels])
    digits = np.tile(np.arange(10), 2)
    wrong = {int(index): int(guesses[index]) for index in np.flatnonzero(guesses != digits)}
    # first two rows: the 4 as a 9, the 8 as a 5, the 9 as a 7; last two: the slanted 4, the 7 as a 9
    assert set(wrong) == {4, 8, 9, 14, 17}, wrong
    assert wrong[4] == 9 and wrong[8] == 5 and wrong[9] == 7 and wrong[17] == 9
    assert probabilities[14] < 0.7  # "a loop that is no clear digit"


def test_the_noise_or_the_mean_changes_the_digit(model, digit_classifier, test_set, codes):
    x_test, y_test = test_set
    panels = panel_images(plotting.plot_mean_vs_sample_reconstructions(model, x_test, y_test, seed=0))
    through_mean, _ = classify(digit_classifier, [panel[:, SIDE + 1: 2 * SIDE + 1] for panel in panels])
    through_sample, _ = classify(digit_classifier, [panel[:, 2 * SIDE + 2:] for panel in panels])
    digits = np.tile(np.arange(10), 2)
    mean_wrong = {int(index): int(through_mean[index]) for index in np.flatnonzero(through_mean != digits)}
    assert mean_wrong == {8: 5, 12: 3}  # the first 8 is a 5 through the mean, the second 2 a 3
    assert through_sample[8] == 5 and through_sample[12] == 2  # "already" for the 8; "a 2 through the sample"
    for index in (4, 9, 14, 17):  # the first 4 and 9, the second 4 and 7: right through the mean only
        assert through_mean[index] == digits[index] != through_sample[index]
    # sigma "not small": in the active dimensions, comparable with the spread of the means
    z_mean, z_log_var = codes
    active = analysis.active_units(analysis.kl_per_dimension(model, x_test))
    sigma = np.exp(0.5 * z_log_var[:, active]).mean()
    assert sigma > 0.5 * z_mean[:, active].std(axis=0).mean()


# The latent space


def centroids(axis, y):
    """Each digit's mean point in a scatter: (x = PC 2, y = PC 1, drawn pointing down)."""
    points = np.asarray(axis.collections[0].get_offsets())
    return np.array([points[y == digit].mean(axis=0) for digit in range(10)])


def test_where_the_digits_lie_in_the_latent_space(model, test_set):
    x_test, y_test = test_set
    figure = plotting.plot_latent_space(model, x_test, y_test)
    means, log_variances = [axis for axis in figure.axes if axis.collections][:2]
    assert means.yaxis_inverted() and log_variances.yaxis_inverted()
    c = centroids(means, y_test)
    others = [digit for digit in range(10) if digit != 1]
    assert c[1, 0] < c[others, 0].min() and c[1, 1] > c[others, 1].max()  # 1s: lower left
    assert c[0, 1] < c[1:, 1].min() and c[0, 0] > 0.5  # 0s: upper right
    assert np.all(c[[4, 7, 9]] > 0.5)  # 4s, 7s, 9s: lower right
    middle = c[[2, 3, 5, 6, 8]]
    assert np.all(middle[:, 1] < 0) and np.all(middle[:, 0] < 0)  # upper left and middle
    c = centroids(log_variances, y_test)
    gaps = np.array([min(np.linalg.norm(c[d] - c[e]) for e in range(10) if e != d) for d in range(10)])
    assert gaps.argmax() == 1 and c[1, 1] == c[:, 1].max()  # the 1s: most isolated, at the bottom
    round_digits, long_digits = c[[0, 2, 3, 5, 6, 8]], c[[4, 7, 9]]
    assert long_digits[:, 0].max() < round_digits[:, 0].min()  # the 4s, 7s and 9s on the left
    assert round_digits[:, 1].max() < long_digits[:, 1].min() < long_digits[:, 1].max() < c[1, 1]


# Generation and interpolation


def test_generated_digits_mostly_readable_the_second_of_row_four_dimmest(model, digit_classifier):
    tile = panel_images(plotting.plot_generated(model, n=25, seed=0))[0]
    images = tiles(tile, 5).reshape(25, SIDE, SIDE)
    assert np.argmin(images.max(axis=(1, 2))) == 16 and np.argmin(images.std(axis=(1, 2))) == 16
    _, probabilities = classify(digit_classifier, images)
    assert np.sum(probabilities > 0.8) > 12  # most are readable


def test_the_interpolation_turns_a_3_into_an_8_gradually(model, digit_classifier, test_set):
    x_test, y_test = test_set
    rng = np.random.default_rng(0)  # as the notebook and save_all_figures choose them
    start = x_test[rng.choice(np.flatnonzero(y_test == 3))]
    end = x_test[rng.choice(np.flatnonzero(y_test == 8))]
    frames = np.array(panel_images(plotting.plot_interpolation(model, start, end, steps=10))[1:-1])
    assert frames.shape == (10, SIDE, SIDE)
    images = frames.reshape(-1, SIDE, SIDE, 1)
    _, probabilities = quality._classify(digit_classifier, images)
    assert np.all(probabilities[:7].argmax(axis=1) == 3) and np.all(probabilities[:7, 3] > 0.9)  # to t=0.56
    assert probabilities[-1].argmax() == 8  # t = 1.00: an 8
    assert np.all(np.diff(probabilities[:, 8]) > -0.01)  # the 8 grows step by step
    steps = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2))
    assert steps.max() < 0.35 * np.abs(frames[-1] - frames[0]).mean()  # no jump


# The map of the latent space and its centre


def test_the_latent_grid_regions_and_its_flat_centre(model, digit_classifier, test_set, codes):
    x_test, _ = test_set
    grid = tiles(panel_images(plotting.plot_latent_grid(model, x_test, n=15))[0], 15)
    guesses, _ = classify(digit_classifier, grid.reshape(-1, SIDE, SIDE))
    guesses = guesses.reshape(15, 15)
    assert set(guesses[:5, 10:].ravel()) == {0}  # 0s at the top right
    assert guesses[7, 14] == 9 and set(guesses[13:, 9:].ravel()) == {7}  # 9s down the right, 7s at the bottom
    assert set(guesses[10:, :5].ravel()) == {1}  # 1s at the lower left
    assert set(guesses[:5, :5].ravel()) == {2, 3}  # 3s and 2s at the upper left
    # Neighbouring tiles change slowly: far less between neighbours than between tiles 7 apart.
    flat = grid.reshape(15, 15, -1)
    near = np.abs(np.diff(flat, axis=1)).mean(axis=2)
    far = np.abs(flat[:, 7:] - flat[:, :-7]).mean(axis=2)
    assert np.median(near) < 0.5 * np.median(far)
    # The centre: the decoded mean of the test codes, flat, unlike its neighbours.
    centre = ops.convert_to_numpy(model.decode(codes[0].mean(axis=0, keepdims=True)))[0, ..., 0]
    np.testing.assert_allclose(grid[7, 7], centre, atol=1e-5)
    spread = grid.std(axis=(2, 3))
    neighbours = [spread[7 + i, 7 + j] for i in (-1, 0, 1) for j in (-1, 0, 1) if (i, j) != (0, 0)]
    assert spread.argmin() == 7 * 15 + 7 and spread[7, 7] < 0.7 * min(neighbours)
    assert spread[7, 7] < 0.25 * np.median(spread)


def test_z_zero_decodes_to_a_flat_period_4_pattern(model, codes):
    z_mean = codes[0]
    centre = z_mean.mean(axis=0)
    assert np.linalg.norm(centre) < 0.1 * np.median(np.linalg.norm(z_mean, axis=1))  # the KL keeps it near 0
    zero = np.zeros((1, model.latent_dim), "float32")
    first = keras.Model(model.decoder.input, model.decoder.get_layer("transpose1").output)
    first_output = ops.convert_to_numpy(first(zero))[0]
    assert first_output.shape[:2] == (7, 7)
    assert np.ptp(first_output, axis=(0, 1)).max() < 1e-5  # its bias alone, the same at all 49 positions
    image = ops.convert_to_numpy(model.decode(zero))[0, ..., 0]
    inner = image[4:24, 4:24]
    np.testing.assert_allclose(inner[4:], inner[:-4], atol=1e-5)  # repeats every 4 pixels
    np.testing.assert_allclose(inner[:, 4:], inner[:, :-4], atol=1e-5)
    assert not np.allclose(inner[2:], inner[:-2], atol=1e-3)  # ... and not every 2: a period of 4
    assert image.std() < 0.05 and 0.1 < image.min() and image.max() < 0.5  # flat grey


# The bound, the latent dimensions, the least certain samples


def test_each_factor_of_ten_in_k_tightens_the_bound_less(model, test_set):
    images = test_set[0][:50]
    bounds = [analysis.iwae_bound(model, images, k=k, seed=0) for k in (1, 10, 100)]
    gains = -np.diff(bounds)
    assert np.all(gains > 0) and gains[0] > gains[1]


def test_both_counts_pick_the_same_active_dimensions(model, test_set, codes):
    z_mean, z_log_var = codes
    kl = analysis.kl_per_dimension(model, test_set[0])
    active = analysis.active_units(kl)
    assert 0 < active.sum() < len(kl)  # some inactive dimensions, not all
    np.testing.assert_array_equal(active, z_mean.var(axis=0) > 0.01)
    assert kl.sum() == pytest.approx(float(np.mean(vae_keras.kl_loss(z_mean, z_log_var))), rel=1e-4)


def test_the_least_confident_samples(model, digit_classifier):
    figure = quality.plot_least_confident(model, digit_classifier, n=25, pool=10_000, seed=0)
    titles = [axis.get_title() for axis in figure.axes if axis.images]
    assert len(titles) == 25
    guesses = {int(title.split()[0]) for title in titles}
    probabilities = [float(title.split("(")[1].rstrip(")")) for title in titles]
    assert max(probabilities) < 0.25 and guesses == set(range(10))


def test_the_bound_cell_decodes_as_many_codes_as_the_text_says():
    # "The cell takes k = 1, 10, 100 and 1000 on 500 test images: 555,500 decoded codes."
    code = "".join("".join(cell["source"]) for cell in notebook_cells() if cell["cell_type"] == "code")
    ks = [int(k) for k in re.search(r"else \[([\d, ]+)\]\nbounds", code).group(1).split(",")]
    images = int(re.search(r"else x_test\[:(\d+)\]", code).group(1))
    prose = " ".join("".join(cell["source"]) for cell in notebook_cells() if cell["cell_type"] == "markdown")
    assert ks == [1, 10, 100, 1000] and f"{images * sum(ks):,} decoded codes" in " ".join(prose.split())
