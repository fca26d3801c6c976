"""The example's figures (reconstructions, latent space, generated digits) and a few more.

Each `plot_*` function returns a `matplotlib.figure.Figure` and, given a `path`, saves it
as PNG (a name without a suffix gets ".png"; parent folders are created).
"""

import math
import os
import statistics
from pathlib import Path

import matplotlib
import matplotlib.colors
import matplotlib.figure
import numpy as np
from keras import ops
from PIL import Image

from vae_keras import analysis
from vae_keras.checks import check_int, check_number
from vae_keras.config import MNIST_IMAGE_SHAPE, NUM_CLASSES, REFERENCE_TEST_ELBO
from vae_keras.data import load_mnist
from vae_keras.files import write_atomically
from vae_keras.run_folder import read_history

# Resolution of the saved PNG files.
DPI = 120
# One distinct colour per digit. The reference uses parula(10), a sequential
# map whose neighbouring digits are hard to tell apart; tab10 is made for classes.
DIGIT_COLORMAP = matplotlib.colors.ListedColormap(
    matplotlib.colormaps["tab10"].colors, name="digits"
)
# Boundaries half-way between the digits, so digit d gets the d-th colour.
DIGIT_NORM = matplotlib.colors.BoundaryNorm(np.arange(-0.5, 10.5), DIGIT_COLORMAP.N)
# How a digit is drawn: grey levels from black (0) to white (1), one image pixel per block.
IMAGE_STYLE = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0, "interpolation": "nearest"}


def plot_reconstructions(model, x, y=None, seed=None, path=None):
    """A figure of two random test images of each digit beside their reconstructions.

    As the reference's `visualizeReconstruction`: 4x5 panels `[original | reconstruction]`.

    Args:
        model: a `vae_keras.VAE`.
        x: images, shape (N, H, W, C) or (N, H, W) as the model takes them, values in [0, 1].
        y: their digit labels, shape (N,); None (your own images): 20 random images (all, if fewer).
        seed: seeds the choice of images and the sampling noise (then restored); None: random.
        path: where to save the figure; None: not saved.

    Raises:
        ValueError: if `x` and `y` disagree in length, or a digit 0-9 has no image in `y`.
    """
    digits, originals, reconstructions = _two_per_digit_reconstructed(model, x, y, seed, "plot_reconstructions")
    return _digit_panels(
        digits, [originals, reconstructions], (10, 6.4), "Example ground truth image vs. reconstructed image", path
    )


def plot_latent_space(model, x, y=None, path=None):
    """A figure of the codes' means and log-variances in their first two principal components.

    As the reference's `visualizeLatentSpace`: two scatters coloured by digit, PC 2 on the
    x axis, PC 1 on the y axis (pointing down).

    Args:
        model: a `vae_keras.VAE`.
        x: images, shape (N, H, W, C) or (N, H, W), N >= 2.
        y: their digit labels 0-9, shape (N,), for the colours; None: one colour.
        path: where to save the figure; None: not saved.

    Raises:
        ValueError: if `x` and `y` disagree in length, or `x` holds fewer than 2 images.
    """
    from sklearn.decomposition import PCA

    x = check_images(x, model)
    y = None if y is None else _labels(y, x)
    _check_at_least_two(x, "plot_latent_space")
    z_mean, z_log_var = analysis.encode(model, x, y)

    figure = matplotlib.figure.Figure(figsize=(12, 5.6), layout="constrained")
    axes = figure.subplots(1, 2)
    panels = [(z_mean, "Z_mu", "means"), (z_log_var, "Z_logvar", "log-variances")]
    for axis, (codes, symbol, title) in zip(axes, panels):
        scores = PCA(n_components=2).fit_transform(codes)
        colours = {"c": "tab:blue"} if y is None else {"c": y, "cmap": DIGIT_COLORMAP, "norm": DIGIT_NORM}
        points = axis.scatter(scores[:, 1], scores[:, 0], s=5, linewidths=0, alpha=0.8, **colours)
        axis.invert_yaxis()
        axis.set_aspect("equal", adjustable="datalim")
        axis.set(xlabel=f"{symbol} PC 2", ylabel=f"{symbol} PC 1", title=f"Latent space: {title}")
        if y is None:
            continue
        colorbar = figure.colorbar(points, ax=axis, ticks=range(10))
        colorbar.set_ticklabels([str(digit) for digit in range(10)])
        colorbar.set_label("digit")
        colorbar.minorticks_off()
    save_figure(figure, path)
    return figure


def plot_generated(model, n=25, seed=None, path=None, digit=None):
    """A figure of `model.generate(n, seed, digit=digit)`, digits decoded from N(0, I) codes, in one tile.

    As the reference's `generate`: `ceil(sqrt(n))` columns, no gaps, empty places black.

    Args:
        model: a `vae_keras.VAE`.
        n: number of digits, >= 1.
        seed: int or None; the same seed gives the same digits.
        path: where to save the figure; None: not saved.
        digit: the digit a conditional model draws (see `VAE.generate`).

    Raises:
        ValueError: if `n` is not a positive integer, or for a `digit` `VAE.generate` refuses.
    """
    check_int("n", n)
    images = model.generate(n, seed=seed, digit=digit)
    tile = tile_images(images)
    size = min(2.0 + 0.04 * tile.shape[1], 10.0)
    figure = matplotlib.figure.Figure(figsize=(size, size * tile.shape[0] / tile.shape[1] + 0.4))
    axis = figure.subplots()
    axis.imshow(tile, **IMAGE_STYLE)
    axis.set_axis_off()
    what = "digits" if model.image_shape == MNIST_IMAGE_SHAPE else "images"
    axis.set_title(f"Generated samples of {what}" if digit is None else f"Generated samples of the digit {digit}")
    save_figure(figure, path)
    return figure


def plot_generated_by_digit(model, n=10, seed=None, path=None):
    """For a conditional VAE: a figure of ten rows of generated digits, row d drawn with `digit=d`.

    Every row decodes the same `n` prior codes, so a column shows one code, one
    "style", written as each digit.

    Args:
        model: a conditional `vae_keras.VAE`.
        n: digits per row, >= 1.
        seed: seed of the codes.
        path: where to save the figure; None: not saved.

    Raises:
        ValueError: for an unconditional model, or `n` not a positive integer.
    """
    _check_conditional(model, "plot_generated_by_digit")
    check_int("n", n)
    codes = np.tile(model.prior_codes(n, seed), (NUM_CLASSES, 1))
    digits = np.repeat(np.arange(NUM_CLASSES), n).astype("int32")
    tile = tile_images(model.decode_codes(codes, digits), columns=n)
    figure = matplotlib.figure.Figure(figsize=(0.55 * n + 1.0, 0.55 * NUM_CLASSES + 0.8), layout="constrained")
    axis = figure.subplots()
    axis.imshow(tile, **IMAGE_STYLE)
    axis.set_yticks(14 + 28 * np.arange(NUM_CLASSES), labels=[str(digit) for digit in range(NUM_CLASSES)])
    axis.set_xticks(14 + 28 * np.arange(n), labels=[str(column + 1) for column in range(n)])
    axis.set(ylabel="digit asked for", xlabel="code (the same in every row)",
             title="A conditional VAE: each row asks for one digit")
    save_figure(figure, path)
    return figure


def plot_generated_side_by_side(models, n=16, seed=0, path=None):
    """A figure of the digits several models generate from the same seed, one tile per model.

    Args:
        models: `{title: vae_keras.VAE}`, one panel each, left to right (a conditional
            model draws the digits 0-9 in turn).
        n: digits per panel, >= 1 (a square tile of `ceil(sqrt(n))` columns).
        seed: seed of the codes; models of one latent size decode the same codes.
        path: where to save the figure; None: not saved.

    Raises:
        ValueError: for no models or `n` not a positive integer.
    """
    if not models:
        raise ValueError("plot_generated_side_by_side needs at least one model, received none")
    check_int("n", n)
    figure = matplotlib.figure.Figure(figsize=(2.6 * len(models), 3.0), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(models)))
    for axis, (title, model) in zip(axes, models.items()):
        axis.imshow(tile_images(model.generate(n, seed=seed)), **IMAGE_STYLE)
        axis.set_title(title, fontsize=10)
        axis.set_axis_off()
    save_figure(figure, path)
    return figure


def plot_sorted_kl(kls, threshold=None, path=None):
    """A figure comparing models' KL per latent dimension, each sorted from largest to smallest.

    Dimensions below `threshold` (the dashed line) are inactive: the encoder
    leaves them at the prior, whatever the image (posterior collapse where all are).

    Args:
        kls: `{label: kl}`, each a 1-D array as `analysis.kl_per_dimension` returns.
        threshold: nats of an active unit; None: `analysis.ACTIVE_THRESHOLD`.
        path: where to save the figure; None: not saved.

    Raises:
        ValueError: for no arrays, or an array that is not 1-D and non-empty.
    """
    if not kls:
        raise ValueError("plot_sorted_kl needs at least one array, received none")
    threshold = analysis.ACTIVE_THRESHOLD if threshold is None else threshold
    figure = matplotlib.figure.Figure(figsize=(8, 4), layout="constrained")
    axis = figure.subplots()
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
    save_figure(figure, path)
    return figure


def plot_digit_styles(model, x, y, n=6, seed=None, path=None):
    """For a conditional VAE: `n` test images, each encoded with its digit and decoded as every digit 0-9.

    The code of a conditional VAE need not hold which digit it is, only how it is
    written; decoding one code with each label writes the ten digits in that style.

    Args:
        model: a conditional `vae_keras.VAE`.
        x: images (N, 28, 28, 1); y: their digits.
        n: images drawn (seeded), one row each.
        seed: seed of the choice of images.
        path: where to save the figure; None: not saved.

    Raises:
        ValueError: for an unconditional model, lengths that differ, or `n` above N.
    """
    _check_conditional(model, "plot_digit_styles")
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
    figure = matplotlib.figure.Figure(figsize=(7.4, 0.62 * n + 0.9), layout="constrained")
    axis = figure.subplots()
    axis.imshow(tile, **IMAGE_STYLE)
    axis.axvline(27.5, color="tab:red", linewidth=1.5)
    axis.set_xticks(14 + 28 * np.arange(NUM_CLASSES + 1), labels=["test image", *map(str, range(NUM_CLASSES))],
                    fontsize=8)
    axis.set_yticks([])
    axis.set(xlabel="decoded with the digit", title="One code, every digit: the code holds the style")
    save_figure(figure, path)
    return figure


def plot_latent_plane(model, x, y, n=20, path=None, digit=None):
    """For a 2-D latent space: the test codes coloured by digit beside the decoder's map of the plane itself.

    The map decodes an n x n grid at the N(0, 1) quantiles 0.5/n ... 1 - 0.5/n of
    each axis (as keras.io draws it), so every tile stands for an equal share of
    the prior; both panels have z_1 to the right and z_2 upwards, on one scale.

    Args:
        model: a `vae_keras.VAE` with `latent_dim == 2`.
        x: images (N, 28, 28, 1), N >= 1; y: their digits, for the colours.
        n: tiles per side, >= 2.
        path: where to save the figure; None: not saved.
        digit: for a conditional model, the digit the map is drawn as (required there).

    Raises:
        ValueError: for a model whose codes are not 2-D, `n` < 2, lengths that differ, or a
            conditional model without `digit`.
    """
    if model.latent_dim != 2:
        raise ValueError(
            f"plot_latent_plane draws a 2-D latent space, received a model with latent_dim={model.latent_dim}; "
            "plot_latent_space and plot_latent_grid project other sizes onto two principal directions"
        )
    check_int("n", n, minimum=2)
    if model.conditional and digit is None:
        raise ValueError("plot_latent_plane of a conditional model draws the plane as one digit: pass digit=0..9")
    x = check_images(x, model)
    y = None if y is None else _labels(y, x)
    z_mean, _ = analysis.encode(model, x, y)
    normal = statistics.NormalDist()
    values = np.array([normal.inv_cdf((i + 0.5) / n) for i in range(n)])
    z1, z2 = np.meshgrid(values, values[::-1])  # rows from the top: z_2 decreasing
    codes = np.stack([z1.ravel(), z2.ravel()], axis=1).astype("float32")
    tile = tile_images(model.decode_codes(codes, model.prior_labels(len(codes), digit)), columns=n)
    limit = float(max(np.abs(values).max() + 0.5 * (values[1] - values[0]), np.abs(z_mean).max()))

    figure = matplotlib.figure.Figure(figsize=(13, 6.2), layout="constrained")
    left, right = figure.subplots(1, 2)
    colours = {"c": "tab:blue"} if y is None else {"c": y, "cmap": DIGIT_COLORMAP, "norm": DIGIT_NORM}
    points = left.scatter(z_mean[:, 0], z_mean[:, 1], s=2, alpha=0.7, **colours)
    left.set(xlim=(-limit, limit), ylim=(-limit, limit), xlabel="z_1", ylabel="z_2", aspect="equal",
             title="Test images' code means")
    if y is not None:
        colorbar = figure.colorbar(points, ax=left, ticks=range(10))
        colorbar.set_label("digit")
        colorbar.minorticks_off()
    half = 0.5 * (values[1] - values[0])
    right.imshow(tile, **IMAGE_STYLE, extent=(values[0] - half, values[-1] + half, values[0] - half, values[-1] + half))
    right.set(xlim=(-limit, limit), ylim=(-limit, limit), xlabel="z_1", ylabel="z_2",
              title=f"The decoder's map: {n} x {n} codes at the prior's quantiles")
    save_figure(figure, path)
    return figure


# The most images `write_generated` writes: a million, in a tile of at most 28,000 x 28,000 grey pixels' worth.
MAX_GENERATED = 1_000_000
_TILE_SIDE = 28_000
MAX_TILE_VALUES = _TILE_SIDE * _TILE_SIDE
# A tile narrower than this many pixels is enlarged by a whole factor, so 25 digits are not a thumbnail.
_MIN_TILE_WIDTH = 560


def write_generated(model, n, path, seed=None, batch_size=1_000, digit=None):
    """Writes the digits of `model.generate(n, seed, digit=digit)` as one PNG or JPEG tile (see `image_file`).

    Laid out as `plot_generated`'s tile, one image pixel per file pixel (whole-number
    enlarged below 560 pixels wide); decoded a row of digits at a time into an 8-bit
    image, written whole or not at all. Returns `(path, (width, height))`.

    Raises:
        ValueError: for `n` not from 1 to `MAX_GENERATED`, a `path` `image_file`
            refuses, or a `digit` `VAE.generate` refuses.
    """
    height, width, channels = model.decoder.output_shape[1:]
    check_int("n", n, maximum=min(MAX_GENERATED, MAX_TILE_VALUES // (height * width * channels)),
              maximum_is=f"{height}x{width}x{channels} images in a tile of at most {_TILE_SIDE:,} x {_TILE_SIDE:,} grey "
              "pixels' worth")
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
    return _save_image(tile, path), tile.size


# The image files `save_image` and `write_generated` write, by suffix.
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def image_file(path):
    """`(output_path(path), its Pillow format)`, or a ValueError for a folder or a suffix not in `IMAGE_FORMATS`."""
    if str(path).endswith(("/", os.sep)) or Path(path).name in ("", "..") or Path(path).is_dir():
        raise ValueError(f"{str(path)!r} is a folder; give a file name such as generated.png")
    path = output_path(path)
    if path.suffix.lower() not in IMAGE_FORMATS:
        raise ValueError(f"{str(path)!r} has the suffix {path.suffix!r}; write one of {', '.join(IMAGE_FORMATS)}")
    return path, IMAGE_FORMATS[path.suffix.lower()]


def grey_levels(image, scale=1):
    """Values in [0, 1] of shape (H, W), (H, W, 1) or (H, W, 3) as 8-bit levels, each repeated `scale` x `scale`."""
    image = np.asarray(image)
    image = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype("uint8").repeat(scale, 0).repeat(scale, 1)


def _save_image(image, path):
    """Writes a `PIL.Image` as `image_file(path)` says (JPEG at quality 95), whole or not at all; returns the path."""
    path, file_format = image_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"quality": 95} if file_format == "JPEG" else {}
    return write_atomically(path, lambda temporary: image.save(temporary, file_format, **options))


def plot_interpolation(model, x_start, x_end, steps=10, path=None):
    """A figure of decoded codes on the line between the code means of two images.

    One row: the start image, the `steps` decodings, the end image (`steps + 2` panels).

    Args:
        model: a `vae_keras.VAE`.
        x_start: an image, shape (H, W, C) or (H, W) as the model takes them.
        x_end: an image of the same shape.
        steps: number of codes `(1 - t) z_start + t z_end`, t in `linspace(0, 1, steps)`; >= 2.
        path: where to save the figure; None: not saved.

    Raises:
        ValueError: if an image has the wrong shape or `steps` < 2.
    """
    _check_unconditional(model, "plot_interpolation", "plot_digit_styles")
    check_int("steps", steps, minimum=2)  # both ends are decoded
    pair = np.concatenate([check_images(np.asarray(x_start, "float32")[None], model, "x_start"),
                           check_images(np.asarray(x_end, "float32")[None], model, "x_end")])
    z_mean, _ = analysis.encode(model, pair)
    t = np.linspace(0.0, 1.0, steps, dtype="float32")[:, None]
    codes = (1.0 - t) * z_mean[0] + t * z_mean[1]
    decoded = ops.convert_to_numpy(model.decode(codes))

    images = [pair[0], *decoded, pair[1]]
    titles = ["start", *(f"t={value:.2f}" for value in t[:, 0]), "end"]
    figure = matplotlib.figure.Figure(figsize=(1.0 * len(images), 1.75))
    axes = figure.subplots(1, len(images))
    for axis, image, title in zip(axes, images, titles):
        axis.imshow(_drawable(image), **IMAGE_STYLE)
        axis.set_title(title, fontsize=8)
        axis.set_axis_off()
    figure.suptitle("Interpolating between the means of two codes")
    save_figure(figure, path)
    return figure


def plot_latent_grid(model, x, n=15, span=2.5, path=None):
    """A figure of decoded codes on an n x n grid along the means' two principal directions.

    Laid out as the means panel of `plot_latent_space`: PC 2 to the right, PC 1 downwards.

    Args:
        model: a `vae_keras.VAE`.
        x: images whose code means define the directions, shape (N, H, W, C), N >= 2.
        n: grid points per side, >= 1.
        span: the grid reaches `span` standard deviations from the mean, > 0.
        path: where to save the figure; None: not saved.

    Raises:
        ValueError: for `n` < 1, a `span` that is not positive, or fewer than 2 images.
    """
    from sklearn.decomposition import PCA

    _check_unconditional(model, "plot_latent_grid", "plot_digit_styles")
    check_int("n", n)
    check_number("span", span)
    x = check_images(x, model)
    _check_at_least_two(x, "plot_latent_grid")
    z_mean, _ = analysis.encode(model, x)
    pca = PCA(n_components=2).fit(z_mean)
    directions = pca.components_ * np.sqrt(pca.explained_variance_)[:, None]
    values = np.linspace(-span, span, n)
    a, b = np.meshgrid(values, values, indexing="ij")  # a: rows (PC 1), b: columns (PC 2)
    codes = pca.mean_ + a.reshape(-1, 1) * directions[0] + b.reshape(-1, 1) * directions[1]
    decoded = ops.convert_to_numpy(model.decode(codes.astype("float32")))
    tile = tile_images(decoded, columns=n)

    figure = matplotlib.figure.Figure(figsize=(7.5, 7.5))
    axis = figure.subplots()
    axis.imshow(tile, **IMAGE_STYLE)
    labels = [f"{values[0]:.1f}", f"{values[n // 2]:.1f}", f"{values[-1]:.1f}"]
    height, width = model.image_shape[:2]
    axis.set_xticks([width * i + width // 2 for i in (0, n // 2, n - 1)], labels=labels)
    axis.set_yticks([height * i + height // 2 for i in (0, n // 2, n - 1)], labels=labels)
    axis.set(
        xlabel="Z_mu PC 2 (standard deviations)",
        ylabel="Z_mu PC 1 (standard deviations)",
        title="Decoded codes along the means' two principal directions",
    )
    save_figure(figure, path)
    return figure


def plot_training_curve(history, path=None, reference=REFERENCE_TEST_ELBO):
    """A figure of the test and training ELBO loss per epoch beside the reference's numbers.

    The y axis is zoomed in: the first epochs' values (about 28) lie above the plot.

    Args:
        history: a dict of columns as `vae_keras.run_folder.read_history` returns (`epoch`
            from 1, `val_elbo`, optionally `elbo`), or the path of a `history.csv`.
        path: where to save the figure; None: not saved.
        reference: the published test ELBO per epoch from epoch 1; None or empty: not plotted.

    Raises:
        FileNotFoundError: if `history` is a path that does not exist.
        ValueError: if the history has no epochs or no `epoch` / `val_elbo` column.
    """
    if isinstance(history, (str, Path)):
        history = read_history(history)
    for column in ("epoch", "val_elbo"):
        if column not in history:
            raise ValueError(
                f"The history has no {column!r} column (columns: {', '.join(history)}); "
                "the test ELBO is logged as 'val_elbo' when fit is given validation data"
            )
    epochs = np.asarray(history["epoch"], dtype=int)
    if len(epochs) == 0:
        raise ValueError("The history holds no epochs")
    test_elbo = np.asarray(history["val_elbo"], dtype=float)
    reference = np.asarray(reference if reference is not None else [], dtype=float)

    figure = matplotlib.figure.Figure(figsize=(8, 4.8), layout="constrained")
    axis = figure.subplots()
    axis.plot(epochs, test_elbo, color="tab:blue", marker=".", label="Keras, test ELBO")
    plotted = [test_elbo]
    if "elbo" in history:
        train_elbo = np.asarray(history["elbo"], dtype=float)
        axis.plot(epochs, train_elbo, color="tab:blue", linestyle="--", alpha=0.7,
                  label="Keras, training ELBO")
        plotted.append(train_elbo)
    if len(reference):
        axis.plot(np.arange(1, len(reference) + 1), reference, linestyle="none", marker="o",
                  markersize=4, markerfacecolor="none", color="black",
                  label="MATLAB reference, test ELBO")
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
    save_figure(figure, path)
    return figure


def plot_mean_vs_sample_reconstructions(model, x, y=None, seed=None, path=None):
    """A figure of `plot_reconstructions`' images decoded through the code mean and a sample.

    Panels `[original | mean | sample]`; with the same seed, "sample" is `plot_reconstructions`'.

    Args:
        model: a `vae_keras.VAE`.
        x: images, shape (N, H, W, C) or (N, H, W), values in [0, 1].
        y: their digit labels, shape (N,); None: 20 random images.
        seed: seeds the choice of images and the sampling noise; None: random.
        path: where to save the figure; None: not saved.

    Raises:
        ValueError: if `x` and `y` disagree in length, or a digit 0-9 has no image in `y`.
    """
    digits, originals, sampled = _two_per_digit_reconstructed(model, x, y, seed, "plot_mean_vs_sample_reconstructions")
    z_mean, _ = model.encode(originals, digits)
    through_mean = ops.convert_to_numpy(model.decode(z_mean, digits))
    return _digit_panels(
        digits, [originals, through_mean, sampled], (12, 6.4),
        "Original | decoded from the mean | decoded from a sample", path,
    )


def plot_kl_per_dimension(kl, threshold=None, path=None):
    """A bar chart of the KL term of each latent dimension, active units coloured.

    Args:
        kl: the mean KL per dimension in nats, shape (latent_dim,), as
            `vae_keras.analysis.kl_per_dimension` returns.
        threshold: nats above which a dimension is active (a dashed line); None:
            `vae_keras.analysis.ACTIVE_THRESHOLD` (0.01).
        path: where to save the figure; None: not saved.

    Raises:
        ValueError: if `kl` is not a non-empty 1-D array.
    """
    kl = np.asarray(kl, dtype="float64")
    if kl.ndim != 1 or len(kl) == 0:
        raise ValueError(f"kl must be a non-empty 1-D array (one value per dimension), received shape {kl.shape}")
    threshold = analysis.ACTIVE_THRESHOLD if threshold is None else threshold
    active = analysis.active_units(kl, threshold)
    figure = matplotlib.figure.Figure(figsize=(8, 3.6), layout="constrained")
    axis = figure.subplots()
    colors = np.where(active, "tab:blue", "tab:gray")
    axis.bar(np.arange(len(kl)), kl, color=colors)
    axis.axhline(threshold, color="black", linestyle="--", linewidth=0.8)
    axis.set_xticks(np.arange(len(kl)))
    axis.set(
        xlabel="latent dimension",
        ylabel="mean KL (nats)",
        title=f"KL per latent dimension: {int(active.sum())} of {len(kl)} active (KL > {threshold:g} nats)",
    )
    axis.grid(axis="y", alpha=0.3)
    save_figure(figure, path)
    return figure


def plot_iwae_bound(ks, bounds, elbo=None, path=None):
    """A figure of the importance-weighted bound against the number of samples k (log axis).

    Args:
        ks: the numbers of samples, e.g. `[1, 10, 100, 1000]`.
        bounds: the bound for each k, in loss units, as `vae_keras.analysis.iwae_bound` returns.
        elbo: the ELBO loss of the same images, drawn as a dashed line; None: not drawn.
        path: where to save the figure; None: not saved.

    Raises:
        ValueError: if `ks` and `bounds` are empty or differ in length, or a k is not positive.
    """
    ks = np.asarray(ks, dtype="float64")
    bounds = np.asarray(bounds, dtype="float64")
    if ks.ndim != 1 or ks.shape != bounds.shape or len(ks) == 0:
        raise ValueError(
            f"ks and bounds must be 1-D, non-empty and of the same length, received shapes {ks.shape} and {bounds.shape}"
        )
    if np.any(ks < 1):
        raise ValueError(f"every k must be >= 1, received ks={ks.tolist()}")
    figure = matplotlib.figure.Figure(figsize=(6.4, 4), layout="constrained")
    axis = figure.subplots()
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
    save_figure(figure, path)
    return figure


def save_all_figures(model, out_dir, history_path=None, seed=0, data_dir=None, data=None):
    """Writes the figures of notebook 4 as PNG files, on the MNIST test set or your own images; returns their paths.

    Args:
        model: a `vae_keras.VAE`.
        out_dir: the folder (created if needed) for `reconstructions`, `latent_space`,
            `generated`, `interpolation`, `latent_grid`, `training_curve` and, for a 2-D
            model, `latent_plane` `.png`; for a conditional model `generated` has a row per
            digit and `digit_styles` replaces `interpolation` and `latent_grid`.
        history_path: the model's `history.csv`; None: no training curve.
        seed: seed of the random choices and of the sampling noise.
        data_dir: the MNIST folder, as for `vae_keras.load_mnist`.
        data: `(x_test, y_test)` to draw on instead of MNIST's test set; `y_test` None
            for images without labels (interpolating between two random ones).

    Raises:
        FileNotFoundError: if `history_path` does not exist.
        vae_keras.DataError: if the MNIST files are missing or corrupt.
    """

    out_dir = Path(out_dir)
    history = read_history(history_path) if history_path is not None else None
    x_test, y_test = data if data is not None else load_mnist(data_dir)[1]
    rng = np.random.default_rng(seed)
    if y_test is None:
        start, end = rng.choice(len(x_test), size=2, replace=False)
    else:
        start = rng.choice(np.flatnonzero(y_test == 3))
        end = rng.choice(np.flatnonzero(y_test == 8))

    figures = {
        "reconstructions.png": lambda: plot_reconstructions(model, x_test, y_test, seed=seed),
        "latent_space.png": lambda: plot_latent_space(model, x_test, y_test),
    }
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
    written = []
    for name, make_figure in figures.items():
        save_figure(make_figure(), out_dir / name)
        written.append(out_dir / name)
    return written


def tile_images(images, columns=None):
    """Lays images out in one array, row by row, without gaps.

    Args:
        images: shape (N, H, W, 1) or (N, H, W), or colour (N, H, W, 3).
        columns: images per row; None: `ceil(sqrt(N))`.

    Returns:
        An array of shape (rows * H, columns * W) (colour: and 3), with
        `rows = ceil(N / columns)`; places after the last image are 0.
    """
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


def _two_per_digit_reconstructed(model, x, y, seed, function):
    """Two random test images of each digit (seeded), or 20 random images where `y` is None, and their
    reconstructions through a sampled code (seeded); the digits are None then."""
    x = check_images(x, model)
    rng = np.random.default_rng(seed)
    if y is None:
        originals, digits = x[np.sort(rng.choice(len(x), size=min(20, len(x)), replace=False))], None
        with model.sampling.seeded(seed):
            return digits, originals, ops.convert_to_numpy(model(originals, training=False))
    by_digit = [np.flatnonzero(_labels(y, x) == digit) for digit in range(10)]
    missing = [digit for digit, indices in enumerate(by_digit) if len(indices) == 0]
    if missing:
        raise ValueError(
            f"{function} needs at least one image of each digit 0-9; "
            f"y has no image of digit(s) {', '.join(map(str, missing))}"
        )
    digits = np.array([digit for _ in range(2) for digit in range(10)], dtype="int32")
    originals = x[np.array([rng.choice(by_digit[digit]) for digit in digits])]
    with model.sampling.seeded(seed):
        reconstructions = ops.convert_to_numpy(model(model.join_inputs(originals, digits), training=False))
    return digits, originals, reconstructions


def _digit_panels(digits, image_sets, figsize, title, path):
    """A 4x5 figure: panel i shows image i of each set side by side, 1-pixel white columns between, titled by digit."""
    figure = matplotlib.figure.Figure(figsize=figsize)
    first = _drawable(image_sets[0][0])
    separator = np.ones((first.shape[0], 1, *first.shape[2:]), dtype="float32")
    titles = [None] * len(image_sets[0]) if digits is None else digits
    axes = figure.subplots(4, 5).ravel()
    for axis in axes:  # fewer than 20 images leave the last panels empty
        axis.set_axis_off()
    for axis, digit, *images in zip(axes, titles, *image_sets):
        pieces = [piece for image in images for piece in (separator, _drawable(image))][1:]
        axis.imshow(np.concatenate(pieces, axis=1), **IMAGE_STYLE)
        if digit is not None:
            axis.set_title(str(digit))
        axis.set_axis_off()
    figure.suptitle(title)
    save_figure(figure, path)
    return figure


def output_path(path):
    """Where a figure asked for at `path` is written: a name without a suffix gets ".png"."""
    path = Path(path)
    return path.with_name(path.name + ".png") if not path.suffix else path


def save_figure(figure, path):
    """Writes a figure as a PNG file (a name without a suffix gets ".png"), whole or not at all; None: nothing."""
    if path is not None:
        path = output_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=DPI, bbox_inches="tight"))


def save_image(array, path):
    """Writes `grey_levels(array)` as a PNG or JPEG (see `image_file`), a pixel each; returns the path."""
    return _save_image(Image.fromarray(grey_levels(array)), path)


def check_images(x, model=None, name="the images"):
    """`x` as float32 images (N, H, W, C) of the shape `model` takes (MNIST's without one; a missing
    grey channel axis is added), or a ValueError."""
    shape = MNIST_IMAGE_SHAPE if model is None else model.image_shape
    x = np.asarray(x, dtype="float32")
    if x.ndim == 3 and shape[2] == 1:
        x = x[..., None]
    if x.ndim != 4 or x.shape[1:] != shape:
        expected = f"(N, {', '.join(map(str, shape))})" + (f" or (N, {shape[0]}, {shape[1]})" if shape[2] == 1 else "")
        raise ValueError(f"Expected {name} of shape {expected}, received shape {x.shape}")
    return x


def _drawable(image):
    """One image (H, W, C) as imshow draws it: (H, W) grey, or (H, W, 3) colour."""
    return image[..., 0] if image.shape[-1] == 1 else image


def _labels(y, x):
    y = np.asarray(y).reshape(-1)
    if len(y) != len(x):
        raise ValueError(f"x and y must have the same length, received {len(x)} images and {len(y)} labels")
    return y


def _check_conditional(model, function):
    if not model.conditional:
        raise ValueError(f"{function} draws a conditional VAE's digits; this model is unconditional")


def _check_unconditional(model, function, instead):
    if model.conditional:
        raise ValueError(
            f"{function} decodes codes without digits, for an unconditional VAE; for a conditional one "
            f"see {instead}"
        )


def _check_at_least_two(x, function):
    if len(x) < 2:
        raise ValueError(f"{function} needs at least 2 images for a 2-component PCA, received {len(x)}")
