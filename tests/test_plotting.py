"""Tests for vae_keras.plotting and the command line's generate and figures commands."""

import csv
import re
import subprocess
import sys

import keras
import matplotlib.colors
import numpy as np
import pytest

import vae_keras
from vae_keras import plotting
from vae_keras.__main__ import main
from vae_keras.config import REFERENCE_TEST_ELBO

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NUM_IMAGES = 300  # the first 300 test images hold every digit


@pytest.fixture(scope="module")
def model():
    return vae_keras.VAE(seed=0)


@pytest.fixture(scope="module")
def test_data():
    (_, _), (x_test, y_test) = vae_keras.load_mnist()
    x, y = x_test[:NUM_IMAGES], y_test[:NUM_IMAGES]
    assert set(y.tolist()) == set(range(10))
    return x, y


def image_arrays(figure):
    """The image shown in each axis that shows one, as NumPy arrays."""
    return [np.asarray(axis.images[0].get_array()) for axis in figure.axes if axis.images]


def scatter_panels(figure):
    """The axes of a figure that are not colour bars."""
    return [axis for axis in figure.axes if axis.get_label() != "<colorbar>"]


def assert_png(path):
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC


def write_history(path, rows):
    """A history.csv as the CSVLogger writes it (epoch counted from 0)."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["epoch", "elbo", "val_elbo"])
        writer.writeheader()
        for epoch, (elbo, val_elbo) in enumerate(rows):
            writer.writerow({"epoch": epoch, "elbo": elbo, "val_elbo": val_elbo})


def run_cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "vae_keras", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )


# Reconstructions


def test_reconstructions_layout(model, test_data):
    x, y = test_data
    figure = plotting.plot_reconstructions(model, x, y, seed=0)
    assert len(figure.axes) == 20
    assert [axis.get_title() for axis in figure.axes] == [str(d) for d in range(10)] * 2
    assert figure.get_suptitle() == "Example ground truth image vs. reconstructed image"
    panels = image_arrays(figure)
    assert len(panels) == 20
    for digit, panel in zip(list(range(10)) * 2, panels):
        assert panel.shape == (28, 57)
        assert panel.min() >= 0.0 and panel.max() <= 1.0
        np.testing.assert_array_equal(panel[:, 28], 1.0)  # the white separator
        # The left half is a test image of the panel's digit.
        matches = np.all(x[..., 0] == panel[:, :28], axis=(1, 2))
        assert matches.any() and set(y[matches].tolist()) == {digit}


def test_reconstructions_same_seed_same_figure(model, test_data):
    x, y = test_data
    state_before = keras.ops.convert_to_numpy(model.sampling.seed_generator.state.value)
    first = image_arrays(plotting.plot_reconstructions(model, x, y, seed=3))
    again = image_arrays(plotting.plot_reconstructions(model, x, y, seed=3))
    other = image_arrays(plotting.plot_reconstructions(model, x, y, seed=4))
    for panel, same in zip(first, again):
        np.testing.assert_array_equal(panel, same)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))
    # The model's own sampling generator is left as it was.
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.sampling.seed_generator.state.value), state_before
    )


def test_reconstructions_missing_digit_names_it(model, test_data):
    x, y = test_data
    keep = y != 7
    with pytest.raises(ValueError, match="digit\\(s\\) 7"):
        plotting.plot_reconstructions(model, x[keep], y[keep])


def test_reconstructions_rejects_lengths_that_differ(model, test_data):
    x, y = test_data
    with pytest.raises(ValueError, match="same length"):
        plotting.plot_reconstructions(model, x, y[:-1])


# Reconstructions through the mean and through a sample


def test_mean_vs_sample_panels(model, test_data):
    x, y = test_data
    figure = plotting.plot_mean_vs_sample_reconstructions(model, x, y, seed=0)
    assert [axis.get_title() for axis in figure.axes] == [str(d) for d in range(10)] * 2
    reference_panels = image_arrays(plotting.plot_reconstructions(model, x, y, seed=0))
    panels = image_arrays(figure)
    assert len(panels) == 20
    originals = np.stack([panel[:, :28] for panel in panels])[..., None]
    through_mean = np.asarray(model.decode(model.encode(originals)[0]))
    for panel, reference, mean_image in zip(panels, reference_panels, through_mean):
        assert panel.shape == (28, 86)
        np.testing.assert_array_equal(panel[:, 28], 1.0)
        np.testing.assert_array_equal(panel[:, 57], 1.0)
        # The same images as plot_reconstructions with the same seed...
        np.testing.assert_array_equal(panel[:, :28], reference[:, :28])
        # ...the middle decodes the mean, the right is the sampled reconstruction.
        np.testing.assert_allclose(panel[:, 29:57], mean_image[..., 0], atol=1e-5)
        np.testing.assert_allclose(panel[:, 58:], reference[:, 29:], atol=1e-6)
    assert not np.allclose(panels[0][:, 29:57], panels[0][:, 58:])


def test_mean_vs_sample_missing_digit_names_it(model, test_data):
    x, y = test_data
    keep = y != 3
    with pytest.raises(ValueError, match="digit\\(s\\) 3"):
        plotting.plot_mean_vs_sample_reconstructions(model, x[keep], y[keep])


# KL per dimension and the IWAE bound


def test_kl_per_dimension_bars(tmp_path):
    kl = np.array([1.5, 0.001, 0.3, 0.0, 0.02])
    figure = plotting.plot_kl_per_dimension(kl, path=tmp_path / "kl.png")
    (axis,) = figure.axes
    bars = axis.patches
    np.testing.assert_allclose([bar.get_height() for bar in bars], kl)
    active = [bar.get_facecolor() == matplotlib.colors.to_rgba("tab:blue") for bar in bars]
    assert active == [True, False, True, False, True]
    assert axis.get_title().startswith("KL per latent dimension: 3 of 5 active")
    assert_png(tmp_path / "kl.png")


def test_kl_per_dimension_rejects_a_matrix():
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        plotting.plot_kl_per_dimension(np.ones((2, 3)))


def test_iwae_bound_figure():
    figure = plotting.plot_iwae_bound([1, 10, 100], [18.1, 17.5, 17.4], elbo=18.2)
    (axis,) = figure.axes
    assert axis.get_xscale() == "log"
    line, elbo_line = axis.get_lines()
    np.testing.assert_allclose(line.get_xdata(), [1, 10, 100])
    np.testing.assert_allclose(line.get_ydata(), [18.1, 17.5, 17.4])
    np.testing.assert_allclose(elbo_line.get_ydata(), [18.2, 18.2])
    assert [text.get_text() for text in axis.texts] == ["18.10", "17.50", "17.40"]


def test_iwae_bound_figure_rejects_lengths_that_differ():
    with pytest.raises(ValueError, match=r"\(2,\) and \(3,\)"):
        plotting.plot_iwae_bound([1, 10], [18.0, 17.5, 17.4])


# Latent space


def test_latent_space_panels_and_colour_bars(model, test_data):
    x, y = test_data
    figure = plotting.plot_latent_space(model, x, y)
    panels = scatter_panels(figure)
    assert len(panels) == 2
    assert [axis.get_title() for axis in panels] == [
        "Latent space: means",
        "Latent space: log-variances",
    ]
    assert panels[0].get_xlabel() == "Z_mu PC 2" and panels[0].get_ylabel() == "Z_mu PC 1"
    for axis in panels:
        points = axis.collections[0]
        assert len(points.get_offsets()) == len(x)
        np.testing.assert_array_equal(points.get_array(), y)
        assert axis.yaxis_inverted()
        labels = [label.get_text() for label in points.colorbar.ax.get_yticklabels()]
        assert labels == [str(digit) for digit in range(10)]
    assert len(figure.axes) == 4  # two panels, two colour bars


def test_latent_space_matches_numpy_pca(model, test_data):
    x, y = test_data
    figure = plotting.plot_latent_space(model, x, y)
    z_mean, z_log_var = model.encode(x)
    panels = scatter_panels(figure)
    for axis, codes in zip(panels, (z_mean, z_log_var)):
        codes = keras.ops.convert_to_numpy(codes).astype(np.float64)
        centred = codes - codes.mean(axis=0)
        u, s, _ = np.linalg.svd(centred, full_matrices=False)
        expected = u[:, :2] * s[:2]  # PC 1, PC 2 scores
        offsets = np.asarray(axis.collections[0].get_offsets())
        plotted = offsets[:, ::-1]  # offsets are (PC 2, PC 1)
        for column in range(2):
            sign = np.sign(np.dot(plotted[:, column], expected[:, column]))
            np.testing.assert_allclose(plotted[:, column], sign * expected[:, column], atol=1e-4)


def test_latent_space_needs_two_images(model, test_data):
    x, y = test_data
    with pytest.raises(ValueError, match="at least 2"):
        plotting.plot_latent_space(model, x[:1], y[:1])


# Generation


def test_generated_tile(model):
    figure = plotting.plot_generated(model, n=25, seed=1)
    assert len(figure.axes) == 1
    assert figure.axes[0].get_title() == "Generated samples of digits"
    (tile,) = image_arrays(figure)
    assert tile.shape == (140, 140)
    assert tile.min() >= 0.0 and tile.max() <= 1.0
    images = model.generate(25, seed=1)
    np.testing.assert_array_equal(tile[28:56, 56:84], images[7, :, :, 0])  # row 1, column 2


def test_generated_seed(model):
    first = image_arrays(plotting.plot_generated(model, n=4, seed=1))[0]
    again = image_arrays(plotting.plot_generated(model, n=4, seed=1))[0]
    other = image_arrays(plotting.plot_generated(model, n=4, seed=2))[0]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_generated_tile_not_square(model):
    (tile,) = image_arrays(plotting.plot_generated(model, n=5, seed=0))
    assert tile.shape == (56, 84)  # 3 columns, 2 rows
    np.testing.assert_array_equal(tile[28:, 56:], 0.0)  # the empty place is black


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_generated_rejects_bad_n(model, n):
    with pytest.raises(ValueError, match="n must be a positive integer"):
        plotting.plot_generated(model, n=n)


def test_generated_writes_png(model, tmp_path):
    path = tmp_path / "new" / "folder" / "generated.png"
    figure = plotting.plot_generated(model, n=4, seed=0, path=path)
    assert isinstance(figure, plotting.matplotlib.figure.Figure)
    assert_png(path)


def levels(tile, scale):
    """An independent reference: values in [0, 1] as 8-bit levels, each pixel enlarged `scale` times."""
    return np.round(np.asarray(tile) * 255).astype("uint8").repeat(scale, 0).repeat(scale, 1)


@pytest.mark.parametrize("n, scale", [(7, 560 // (28 * 3)), (10, 560 // (28 * 4))])
def test_write_generated_is_the_tile_of_generate(model, tmp_path, n, scale):
    from PIL import Image

    path, size = plotting.write_generated(model, n, tmp_path / "digits", seed=3)
    assert path == tmp_path / "digits.png" and path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        assert image.mode == "L" and image.size == size
        np.testing.assert_array_equal(np.asarray(image), levels(plotting.tile_images(model.generate(n, seed=3)), scale))


def test_write_generated_tiles_colour_images_of_any_shape(tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    class ColourModel:  # what the writer asks of a model, with 5 x 4 colour images
        latent_dim = 2
        decoder = SimpleNamespace(output_shape=(None, 5, 4, 3))

        def prior_labels(self, n, digit=None):
            return None

        def decode_codes(self, codes, labels=None, batch_size=None):
            colours = 1 / (1 + np.exp(-codes[:, None, None, :1] * np.array([1.0, -1.0, 2.0])))
            return np.broadcast_to(colours, (len(codes), 5, 4, 3)).astype("float32")

    model = ColourModel()
    path, size = plotting.write_generated(model, 7, tmp_path / "colour.png", seed=1)
    expected = levels(plotting.tile_images(model.decode_codes(np.random.default_rng(1).standard_normal((7, 2)))),
                      560 // (4 * 3))
    with Image.open(path) as image:
        assert image.mode == "RGB" and size == (expected.shape[1], expected.shape[0])
        np.testing.assert_array_equal(np.asarray(image), expected)


def test_write_generated_writes_jpeg_and_refuses_folders_and_other_suffixes(model, tmp_path, monkeypatch):
    from PIL import Image

    for name in ("digits.jpg", "digits.JPEG"):
        path, size = plotting.write_generated(model, 5, tmp_path / name, seed=0)
        assert path.read_bytes()[:2] == b"\xff\xd8"
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.size == size == (504, 336)
    monkeypatch.chdir(tmp_path)
    for folder in (".", "..", str(tmp_path), f"{tmp_path}/", "new_folder/"):
        with pytest.raises(ValueError, match=f"^'{re.escape(folder)}' is a folder; give a file name"):
            plotting.write_generated(model, 4, folder)
    with pytest.raises(ValueError, match=r"^'digits.gif' has the suffix '.gif'; write one of .png, .jpg, .jpeg$"):
        plotting.write_generated(model, 4, "digits.gif")
    assert sorted(item.name for item in tmp_path.iterdir()) == ["digits.JPEG", "digits.jpg"]


def test_save_image_writes_grey_and_colour_levels(tmp_path):
    from PIL import Image

    grey = np.linspace(0, 1, 12, dtype="float32").reshape(3, 4)
    for array, mode in [(grey, "L"), (grey[..., None], "L"), (np.stack([grey, 1 - grey, grey], axis=-1), "RGB")]:
        with Image.open(plotting.save_image(array, tmp_path / "image")) as image:
            assert image.mode == mode
            np.testing.assert_array_equal(np.asarray(image), levels(np.squeeze(array), 1))


# Interpolation


def test_interpolation_ends(model, test_data):
    x, _ = test_data
    figure = plotting.plot_interpolation(model, x[0], x[1], steps=4)
    images = image_arrays(figure)
    assert len(figure.axes) == len(images) == 6
    np.testing.assert_array_equal(images[0], x[0, :, :, 0])
    np.testing.assert_array_equal(images[-1], x[1, :, :, 0])
    z_mean, _ = model.encode(x[:2])
    ends = keras.ops.convert_to_numpy(model.decode(z_mean))[..., 0]
    np.testing.assert_allclose(images[1], ends[0], atol=1e-5)
    np.testing.assert_allclose(images[-2], ends[1], atol=1e-5)
    for image in images:
        assert image.shape == (28, 28) and image.min() >= 0.0 and image.max() <= 1.0


def test_interpolation_rejects_bad_arguments(model, test_data):
    x, _ = test_data
    with pytest.raises(ValueError, match="steps must be an integer >= 2"):
        plotting.plot_interpolation(model, x[0], x[1], steps=1)
    with pytest.raises(ValueError, match="x_end"):
        plotting.plot_interpolation(model, x[0], x[:2])


# Latent grid


def test_latent_grid_size_and_centre(model, test_data):
    x, _ = test_data
    figure = plotting.plot_latent_grid(model, x, n=3)
    (tile,) = image_arrays(figure)
    assert tile.shape == (84, 84)
    assert tile.min() >= 0.0 and tile.max() <= 1.0
    # The centre of the grid is the decoding of the means' mean.
    z_mean = keras.ops.convert_to_numpy(model.encode(x)[0])
    centre = keras.ops.convert_to_numpy(model.decode(z_mean.mean(axis=0, keepdims=True)))
    np.testing.assert_allclose(tile[28:56, 28:56], centre[0, :, :, 0], atol=1e-4)


def test_latent_grid_rejects_bad_arguments(model, test_data):
    x, _ = test_data
    with pytest.raises(ValueError, match="n must be a positive integer"):
        plotting.plot_latent_grid(model, x, n=0)
    with pytest.raises(ValueError, match="span"):
        plotting.plot_latent_grid(model, x, span=0)


# Training curve


def test_training_curve_lines(tmp_path):
    rows = [(40.0, 28.0), (26.0, 24.5), (23.0, 22.9)]
    path = tmp_path / "history.csv"
    write_history(path, rows)
    figure = plotting.plot_training_curve(path)
    (axis,) = figure.axes
    test_line, train_line, reference_line = axis.get_lines()
    np.testing.assert_array_equal(test_line.get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(test_line.get_ydata(), [28.0, 24.5, 22.9])
    np.testing.assert_allclose(train_line.get_ydata(), [40.0, 26.0, 23.0])
    assert train_line.get_linestyle() == "--"
    np.testing.assert_array_equal(reference_line.get_ydata(), REFERENCE_TEST_ELBO)
    np.testing.assert_array_equal(reference_line.get_xdata(), np.arange(1, 51))
    assert axis.get_ylabel() == "ELBO loss" and axis.get_xlabel() == "Epoch"
    assert len(axis.get_legend().get_texts()) == 3
    # Zoomed: from 0.5 below the lowest value to 0.5 above the epoch-2 values.
    low, high = axis.get_ylim()
    assert low == pytest.approx(min(REFERENCE_TEST_ELBO) - 0.5)
    assert high == pytest.approx(max(24.5, REFERENCE_TEST_ELBO[1]) + 0.5)


def test_training_curve_without_reference():
    history = {"epoch": [1, 2], "val_elbo": [27.0, 24.0]}
    figure = plotting.plot_training_curve(history, reference=None)
    assert len(figure.axes[0].get_lines()) == 1


def test_training_curve_rejects_a_history_without_test_elbo():
    with pytest.raises(ValueError, match="val_elbo"):
        plotting.plot_training_curve({"epoch": [1], "elbo": [30.0]})


# Command line


def test_cli_generate_and_figures(model, tmp_path, capsys):
    model_path = tmp_path / "m.keras"
    model.save(model_path)
    out = tmp_path / "out" / "generated.png"
    result = run_cli("generate", "--model", model_path, "--out", out, "--n", 4, "--seed", 1, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_png(out)

    # In-process (saves a second TensorFlow start-up): every figure, with a history.
    history = tmp_path / "history.csv"
    write_history(history, [(40.0, 28.0), (26.0, 24.5)])
    out_dir = tmp_path / "figures"
    status = main(["figures", "--model", str(model_path), "--out-dir", str(out_dir),
                   "--history", str(history)])
    assert status == 0
    names = {
        "reconstructions.png", "latent_space.png", "generated.png",
        "interpolation.png", "latent_grid.png", "training_curve.png",
    }
    assert {path.name for path in out_dir.iterdir()} == names
    for name in names:
        assert_png(out_dir / name)
    assert capsys.readouterr().out.count("Saved ") == len(names)


def test_latent_plane_of_a_2d_model(test_data):
    x, y = test_data[0][:300], test_data[1][:300]
    model = vae_keras.VAE(latent_dim=2, seed=0)
    figure = plotting.plot_latent_plane(model, x, y, n=8)
    left = figure.axes[0]
    right = next(axis for axis in figure.axes if axis.images)
    offsets = left.collections[0].get_offsets()
    z_mean, _ = vae_keras.analysis.encode(model, x)
    np.testing.assert_allclose(offsets, z_mean, rtol=1e-6)
    image = right.images[0]
    assert image.get_array().shape == (8 * 28, 8 * 28)
    # The tiles sit at the N(0, 1) quantiles of 1/16, 3/16, ... 15/16: the first one at -1.534.
    from statistics import NormalDist

    first = NormalDist().inv_cdf(1 / 16)
    step = NormalDist().inv_cdf(3 / 16) - first
    np.testing.assert_allclose(image.get_extent(), [first - step / 2, -first + step / 2] * 2, rtol=1e-6)
    with pytest.raises(ValueError, match="latent_dim=20"):
        plotting.plot_latent_plane(vae_keras.VAE(latent_dim=20, seed=0), x, y)


def test_save_all_figures_adds_the_latent_plane_for_a_2d_model(tmp_path):
    written = plotting.save_all_figures(vae_keras.VAE(latent_dim=2, seed=0), tmp_path)
    assert {path.name for path in written} == {
        "reconstructions.png", "latent_space.png", "generated.png", "interpolation.png", "latent_grid.png",
        "latent_plane.png",
    }
    for path in written:
        assert_png(path)


def test_the_figures_of_a_conditional_model(tmp_path):
    model = vae_keras.ConditionalVAE(latent_dim=3, seed=0)
    written = plotting.save_all_figures(model, tmp_path, seed=0)
    assert [path.name for path in written] == [
        "reconstructions.png", "latent_space.png", "generated.png", "digit_styles.png"
    ]
    figure = plotting.plot_generated_by_digit(model, n=4, seed=2)
    tile = figure.axes[0].images[0].get_array()
    codes = model.prior_codes(4, 2)
    for digit in (0, 6):
        row = model.decode_codes(codes, np.full(4, digit))
        np.testing.assert_allclose(tile[28 * digit : 28 * digit + 28], plotting.tile_images(row, columns=4), atol=1e-6)
    with pytest.raises(ValueError, match="see plot_digit_styles"):
        plotting.plot_latent_grid(model, np.zeros((4, 28, 28, 1), "float32"))
    with pytest.raises(ValueError, match="this model is unconditional"):
        plotting.plot_generated_by_digit(vae_keras.VAE(latent_dim=2, seed=0))


def test_generated_side_by_side_decodes_the_same_codes_for_each_model():
    first, second = vae_keras.VAE(latent_dim=3, seed=0), vae_keras.VAE(latent_dim=3, seed=1)
    figure = plotting.plot_generated_side_by_side({"a": first, "b": second}, n=9, seed=4)
    assert [axis.get_title() for axis in figure.axes] == ["a", "b"]
    for axis, model in zip(figure.axes, (first, second)):
        np.testing.assert_allclose(axis.images[0].get_array(), plotting.tile_images(model.generate(9, seed=4)), atol=1e-6)
    with pytest.raises(ValueError, match="at least one model"):
        plotting.plot_generated_side_by_side({})


def test_sorted_kl_draws_each_model_largest_first_and_counts_its_active_units():
    kl = np.array([0.001, 2.0, 0.5, 0.0])
    figure = plotting.plot_sorted_kl({"model": kl})
    line = figure.axes[0].lines[0]
    np.testing.assert_allclose(line.get_ydata(), [2.0, 0.5, 0.001, 0.0001])  # floored at threshold / 100
    assert figure.axes[0].get_legend().get_texts()[0].get_text() == "model: 2 active"
    with pytest.raises(ValueError, match="kls\\['x'\\]"):
        plotting.plot_sorted_kl({"x": np.ones((2, 2))})


def test_image_rows_stack_each_set_as_a_labelled_row(tmp_path):
    rng = np.random.default_rng(0)
    rows = {"first": rng.random((4, 28, 28, 1)), "second": rng.random((4, 28, 28, 1))}
    figure = plotting.plot_image_rows(rows, "title", path=tmp_path / "rows")
    axis = figure.axes[0]
    expected = np.concatenate([np.concatenate(list(images[..., 0]), axis=1) for images in rows.values()], axis=0)
    np.testing.assert_allclose(axis.images[0].get_array(), expected, atol=1e-6)
    assert [label.get_text() for label in axis.get_yticklabels()] == ["first", "second"]
    np.testing.assert_allclose(axis.get_yticks(), [14, 42])
    assert axis.get_title() == "title" and (tmp_path / "rows.png").read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="sets of one shape"):
        plotting.plot_image_rows({"a": rng.random((4, 28, 28, 1)), "b": rng.random((3, 28, 28, 1))})


def test_codes_against_prior_projects_on_the_principal_components_with_the_circle_at_the_prior_mean():
    from sklearn.decomposition import PCA
    rng = np.random.default_rng(0)
    shifted = rng.normal(size=(200, 5)) * [5, 3, 1, 1, 1] + 2.0  # far from N(0, I)
    y = rng.integers(0, 10, size=200)
    figure = plotting.plot_codes_against_prior({"shifted": shifted, "prior": rng.normal(size=(200, 5))}, y)
    axis = figure.axes[0]
    assert axis.get_title() == "shifted"
    pca = PCA(n_components=2).fit(shifted)
    np.testing.assert_allclose(np.abs(axis.collections[0].get_offsets()), np.abs(pca.transform(shifted)), atol=1e-6)
    circle = axis.patches[0]
    np.testing.assert_allclose(circle.center, pca.transform(np.zeros((1, 5)))[0], atol=1e-9)
    assert circle.radius == 2 and not circle.fill
    # N(0, I) projected on orthonormal axes: about 1 - exp(-2) = 86% of the draws inside the circle.
    draws = rng.normal(size=(20_000, 20))
    projected = PCA(n_components=2).fit(draws).transform(draws)
    assert abs(np.mean(np.linalg.norm(projected, axis=1) < 2) - (1 - np.exp(-2))) < 0.02
