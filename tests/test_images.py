"""Tests for your own images: `load_images` on folders and arrays, the network rule, and training through `--images`."""

import json

import numpy as np
import pytest
from PIL import Image

import vae_keras
from vae_keras import DataError, MissingDataError, VAEConfig, load_images, network_plan, read_images
from vae_keras.__main__ import main
from vae_keras import images as images_module
from vae_keras.models import build_decoder, build_encoder


def _write_folder(folder, count, height, width, channels, seed=0, suffix=".png"):
    """`count` random images written as files; returns them as uint8 (count, height, width, channels)."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (count, height, width, channels), dtype=np.uint8)
    for index, image in enumerate(pixels):
        Image.fromarray(image[..., 0] if channels == 1 else image).save(folder / f"{index:03d}{suffix}")
    return pixels


def _joined(data):
    (x_train, y_train), (x_test, y_test) = data
    assert y_train is None and y_test is None
    return np.concatenate([x_train, x_test])


@pytest.mark.quick
@pytest.mark.parametrize("height, width, channels", [(8, 8, 1), (28, 28, 1), (13, 9, 1), (16, 16, 3), (64, 64, 3), (33, 20, 3)])
def test_a_folder_of_pngs_reads_as_its_pixels_over_255_with_a_seeded_test_split(tmp_path, height, width, channels):
    pixels = _write_folder(tmp_path / "images", 20, height, width, channels)
    (x_train, _), (x_test, _) = load_images(tmp_path / "images", test_fraction=0.25, seed=3)
    assert x_train.dtype == np.float32 and x_train.shape == (15, height, width, channels) and len(x_test) == 5
    expected = pixels.astype(np.float32) / np.float32(255)
    # Every image is in exactly one split, unchanged: match each one back to its file by its values.
    found = sorted(int(np.flatnonzero((expected == image).all(axis=(1, 2, 3)))[0]) for image in [*x_train, *x_test])
    assert found == list(range(20))
    again = load_images(tmp_path / "images", test_fraction=0.25, seed=3)
    assert np.array_equal(again[1][0], x_test)
    assert not np.array_equal(load_images(tmp_path / "images", test_fraction=0.25, seed=4)[1][0], x_test)


@pytest.mark.quick
def test_grey_or_colour_is_read_from_the_files_or_chosen(tmp_path):
    _write_folder(tmp_path / "mixed", 3, 10, 12, 1)
    _write_folder(tmp_path / "mixed", 1, 10, 12, 3, suffix=".jpg")  # one colour file: all are read as colour
    assert read_images(tmp_path / "mixed").shape == (4, 10, 12, 3)
    grey = read_images(tmp_path / "mixed", channels=1)
    assert grey.shape == (4, 10, 12, 1)
    # A grey PNG read as colour repeats its level in the three channels (files in path order: 000.jpg, 000.png...).
    colour = read_images(tmp_path / "mixed", channels=3)
    first = np.asarray(Image.open(tmp_path / "mixed" / "000.png"), dtype=np.float32) / 255
    assert np.array_equal(colour[1], first[..., None].repeat(3, axis=2))


@pytest.mark.quick
def test_images_of_several_sizes_need_a_size_and_are_then_resized(tmp_path):
    _write_folder(tmp_path / "sizes", 2, 20, 20, 1)
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / "sizes" / "wide.png")
    with pytest.raises(DataError, match=r"wide\.png: 30x40 pixels, but .*000\.png is 20x20; give a size"):
        read_images(tmp_path / "sizes")
    resized = read_images(tmp_path / "sizes", size=(16, 24))
    assert resized.shape == (3, 16, 24, 1)
    expected = np.asarray(Image.open(tmp_path / "sizes" / "001.png").resize((24, 16), Image.Resampling.LANCZOS))
    assert np.array_equal(resized[1, ..., 0], expected.astype(np.float32) / np.float32(255))


@pytest.mark.quick
def test_arrays_of_uint8_or_floats_grey_or_colour(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (10, 12, 12), dtype=np.uint8)
    np.save(tmp_path / "grey.npy", pixels)
    assert np.array_equal(read_images(tmp_path / "grey.npy"), (pixels / np.float32(255)).astype(np.float32)[..., None])
    floats = np.random.default_rng(1).random((6, 9, 11, 3))
    np.savez(tmp_path / "one.npz", anything=floats)
    np.savez(tmp_path / "named.npz", images=floats, labels=np.arange(6))
    for name in ("one.npz", "named.npz"):
        assert np.array_equal(read_images(tmp_path / name), floats.astype(np.float32))
    np.savez(tmp_path / "split.npz", x_train=floats[:4], x_test=floats[4:])
    (x_train, _), (x_test, _) = load_images(tmp_path / "split.npz")
    assert np.array_equal(x_train, floats[:4].astype(np.float32)) and np.array_equal(x_test, floats[4:].astype(np.float32))
    assert read_images(tmp_path / "grey.npy", size=(8, 16)).shape == (10, 8, 16, 1)
    assert read_images(tmp_path / "one.npz", channels=1).shape == (6, 9, 11, 1)


@pytest.mark.quick
def test_each_bad_input_is_one_error_naming_the_file_or_value(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    _write_folder(tmp_path / "corrupt", 2, 8, 8, 1)
    (tmp_path / "corrupt" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    _write_folder(tmp_path / "truncated", 2, 32, 32, 3)
    whole = (tmp_path / "truncated" / "001.png").read_bytes()
    (tmp_path / "truncated" / "001.png").write_bytes(whole[: len(whole) // 2])
    _write_folder(tmp_path / "one", 1, 8, 8, 1)
    _write_folder(tmp_path / "tiny", 3, 4, 4, 1)
    np.save(tmp_path / "rank.npy", np.zeros((5, 8), np.uint8))
    np.save(tmp_path / "ints.npy", np.zeros((5, 8, 8), np.int64))
    np.save(tmp_path / "range.npy", np.full((5, 8, 8), 1.5))
    nan = np.zeros((5, 8, 8))
    nan[2, 3, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.savez(tmp_path / "keys.npz", a=np.zeros((5, 8, 8)), b=np.zeros(5))
    (tmp_path / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    cases = [
        (tmp_path / "missing", MissingDataError, "missing: no such file or folder"),
        (tmp_path / "empty", DataError, "empty: no PNG or JPEG files (it is empty)"),
        (tmp_path / "notes", DataError, "notes: no PNG or JPEG files (it holds readme.txt)"),
        (tmp_path / "corrupt", DataError, "bad.png: not a readable PNG or JPEG image"),
        (tmp_path / "truncated", DataError, "001.png: not a readable PNG or JPEG image"),
        (tmp_path / "one", DataError, "1 image(s), too few to hold out a test split"),
        (tmp_path / "tiny", DataError, "images of 4x4 pixels; the networks take sides from 8"),
        (tmp_path / "rank.npy", DataError, "rank.npy: an array of shape (5, 8)"),
        (tmp_path / "ints.npy", DataError, "ints.npy: an array of int64"),
        (tmp_path / "range.npy", DataError, "range.npy: values from 1.5 to 1.5 in images 0 to 4"),
        (tmp_path / "nan.npy", DataError, "and NaN or infinity"),
        (tmp_path / "keys.npz", DataError, "keys.npz: holds the arrays a, b"),
        (tmp_path / "broken.npy", DataError, "broken.npy: not a readable NumPy file"),
        (tmp_path / "notes" / "readme.txt", DataError, "readme.txt: not a folder, .npy or .npz file"),
    ]
    for path, error_class, message in cases:
        with pytest.raises(error_class) as caught:
            load_images(path)
        assert message in str(caught.value) and "\n" not in str(caught.value), (path, caught.value)
    for kwargs, message in [({"test_fraction": 1.0}, "test_fraction=1.0"), ({"size": (4, 8)}, "size=(4, 8)"),
                            ({"channels": 2}, "channels=2")]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_images(tmp_path / "one", **kwargs)
    # Memory: the images' float32 size is checked before they are decoded.
    _write_folder(tmp_path / "good", 2, 8, 8, 1)
    opened = []
    monkeypatch.setattr(images_module, "_available_memory", lambda: 100)  # 80 bytes for 2 x 8 x 8 x 4 = 512
    monkeypatch.setattr(np, "divide", lambda *args, **kwargs: opened.append(args))
    with pytest.raises(DataError, match=r"good: 2 images of 8x8x1 need 0\.0 GiB as float32, more than the 0\.0 GiB"):
        load_images(tmp_path / "good")
    assert not opened  # refused before any image was decoded


@pytest.mark.quick
@pytest.mark.parametrize("side", [8, 9, 15, 16, 28, 31, 32, 64, 100, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_the_network_rule_fits_every_size_exactly(side, channels):
    for shape in [(side, side, channels), (side, max(8, side // 2 + 1), channels)]:
        filters, small_map = network_plan(shape)
        # The encoder halves (rounding up) once per convolution, down to a longer side of at most 7.
        expected_map = shape[:2]
        for _ in filters:
            expected_map = tuple(-(-value // 2) for value in expected_map)
        assert small_map == expected_map and max(small_map) <= 7
        assert len(filters) == 1 or max(-(-value // 2 ** (len(filters) - 1)) for value in shape[:2]) > 7
        encoder, decoder = build_encoder(4, image_shape=shape), build_decoder(4, image_shape=shape)
        assert encoder.inputs[0].shape[1:] == shape and encoder.outputs[0].shape[1:] == (8,)
        assert tuple(decoder.outputs[0].shape[1:]) == shape


@pytest.mark.quick
def test_at_28x28x1_the_networks_are_the_references(mnist):
    assert network_plan((28, 28, 1)) == ([32, 64], (7, 7))
    encoder, decoder = build_encoder(20), build_decoder(20)
    # Counted by hand from the reference's layers: weights k*k*in*out plus a bias per filter.
    conv = lambda k, cin, cout: k * k * cin * cout + cout  # noqa: E731
    assert encoder.count_params() == conv(3, 1, 32) + conv(3, 32, 64) + (7 * 7 * 64 + 1) * 40 == 144_296
    assert decoder.count_params() == conv(7, 20, 64) + conv(3, 64, 64) + conv(3, 64, 32) + conv(3, 32, 1) == 118_465
    shipped = vae_keras.load_vae()
    for built, loaded in ((encoder, shipped.encoder), (decoder, shipped.decoder)):
        assert [(w.path, w.shape) for w in built.weights] == [(w.path, w.shape) for w in loaded.weights]


@pytest.mark.quick
def test_config_takes_an_image_shape_and_refuses_what_does_not_apply():
    assert VAEConfig().image_shape == (28, 28, 1)
    assert VAEConfig(image_shape=[64, 64, 3]).image_shape == (64, 64, 3)
    assert VAEConfig(images="x", resize="32x48").resize == (32, 48)
    for kwargs, message in [
        ({"image_shape": (28, 28, 2)}, "channels 1 (grey) or 3 (colour), received image_shape=(28, 28, 2)"),
        ({"image_shape": (4, 28, 1)}, "sides from 8 to 512 pixels"),
        ({"resize": (32, 32)}, "applies to your own images"),
        ({"images": "x", "conditional": True}, "conditional=True needs each image's digit label"),
        ({"images": "x", "test_fraction": 0}, "test_fraction=0"),
        ({"image_shape": (8, 8, 1), "latent_dim": 65}, "the 64 values of a 8x8x1 image"),
    ]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            VAEConfig(**kwargs)


def test_train_resume_generate_evaluate_and_figures_through_images(tmp_path, capsys):
    pixels = _write_folder(tmp_path / "photos", 40, 16, 16, 3)
    run = tmp_path / "run"
    train = ["train", "--images", str(tmp_path / "photos"), "--batch-size", "12", "--output-dir", str(run),
             "--verbose", "0", "--epochs"]
    assert main([*train, "1"]) == 0
    output = capsys.readouterr().out
    assert "Images: 36 for training and 4 held out for testing, 16x16x3" in output and "image_shape=(16, 16, 3)" in output
    saved = json.loads((run / "config.json").read_text())
    assert saved["image_shape"] == [16, 16, 3] and saved["images"] == str((tmp_path / "photos").resolve())
    assert main([*train, "2", "--verbose", "2"]) == 0  # more epochs carry on from the first
    assert "Resuming the run" in capsys.readouterr().out
    history = vae_keras.read_history(run / "history.csv")
    assert history["epoch"] == [1, 2] and np.all(np.isfinite(history["val_elbo"]))

    assert main(["evaluate", "--model", str(run / "vae.keras")]) == 0
    output = capsys.readouterr().out
    assert "Test images: 4 of the 4 held out of" in output
    # The run's own held-out images: its test ELBO of the last epoch, with the same noise as in training.
    model = vae_keras.load_vae(run / "vae.keras")
    (_, _), (x_test, _) = load_images(tmp_path / "photos", seed=0)
    assert np.isin(x_test, pixels / np.float32(255)).all()
    assert model.image_shape == (16, 16, 3)

    assert main(["generate", "--model", str(run / "vae.keras"), "--n", "9", "--out", str(tmp_path / "g.png")]) == 0
    assert "Saved 9 generated images" in capsys.readouterr().out
    with Image.open(tmp_path / "g.png") as tile:
        assert tile.mode == "RGB" and tile.size == (16 * 3 * 11, 16 * 3 * 11)  # 3 columns, enlarged to >= 528
    assert main(["figures", "--model", str(run / "vae.keras"), "--out-dir", str(tmp_path / "figures")]) == 0
    names = sorted(path.name for path in (tmp_path / "figures").iterdir())
    assert names == ["generated.png", "interpolation.png", "latent_grid.png", "latent_space.png",
                     "reconstructions.png", "training_curve.png"]

    # Other images in the same folder are another run's: refused, naming them, and nothing is rewritten.
    _write_folder(tmp_path / "others", 40, 16, 16, 3, seed=1)
    before = {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()}
    assert main([*train[:2], str(tmp_path / "others"), *train[3:], "2"]) == 2
    assert "images (the run:" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()} == before


def test_cli_refuses_what_does_not_apply_to_own_images_in_one_line(tmp_path, capsys):
    _write_folder(tmp_path / "photos", 20, 8, 8, 1)
    (tmp_path / "empty").mkdir()
    run = tmp_path / "run"
    for args, expected in [
        (["train", "--images", str(tmp_path / "empty"), "--output-dir", str(run)], "no PNG or JPEG files"),
        (["train", "--images", str(tmp_path / "photos"), "--conditional", "--output-dir", str(run)],
         "conditional=True needs each image's digit label"),
        (["train", "--images", str(tmp_path / "photos"), "--image-shape", "16x16x1", "--batch-size", "4",
          "--output-dir", str(run)], "pass image_shape=(8, 8, 1)"),
        (["train", "--images", str(tmp_path / "photos"), "--output-dir", str(run)], "batch_size=512 must be at most"),
        (["train", "--resize", "16x16", "--output-dir", str(run)], "applies to your own images"),
    ]:
        assert main(args) == 2, args
        error = capsys.readouterr().err
        assert error.startswith("error: ") and error.count("\n") == 1 and expected in error, (args, error)
    assert not run.exists()
    assert main(["train", "--images", str(tmp_path / "photos"), "--batch-size", "6", "--epochs", "1",
                 "--output-dir", str(run), "--verbose", "0"]) == 0
    capsys.readouterr()
    for args, expected in [
        (["generate", "--model", str(run / "vae.keras"), "--digit", "3", "--out", str(tmp_path / "d.png")],
         "digit=3: labels do not apply to this model of 8x8x1 images"),
        (["quality", "--model", str(run / "vae.keras")], "draws 8x8x1 images"),
        (["evaluate", "--model", str(run / "vae.keras"), "--images", str(tmp_path / "empty")], "no PNG or JPEG"),
    ]:
        assert main(args) == 2, args
        error = capsys.readouterr().err
        assert error.startswith("error: ") and error.count("\n") == 1 and expected in error, (args, error)
    (run / "config.json").unlink()  # a model whose images nothing names: asked for them
    assert main(["evaluate", "--model", str(run / "vae.keras")]) == 2
    assert "give them with --images PATH" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(run / "vae.keras"), "--images", str(tmp_path / "photos")]) == 0
    assert "Test images: 20 of" in capsys.readouterr().out
    # Your own images have no labels: --test-size slices the images alone (it raised a TypeError).
    assert main(["evaluate", "--model", str(run / "vae.keras"), "--images", str(tmp_path / "photos"), "--test-size", "5"]) == 0
    assert "Test images: 5 of" in capsys.readouterr().out
