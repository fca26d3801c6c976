"""Tests for vae_keras.plotting.DecodedSamples: the same codes decoded after each epoch of a short fit."""

import keras
import numpy as np
import pytest

import vae_keras
from vae_keras.plotting import DecodedSamples

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fitted(small_mnist, tmp_path_factory):
    """A VAE fitted for 2 epochs on 256 images with the callback watching."""
    (x_train, _), _ = small_mnist
    keras.utils.set_random_seed(0)
    model = vae_keras.VAE(seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    path = tmp_path_factory.mktemp("strip") / "strip.png"
    watcher = DecodedSamples(n=6, seed=1, path=path)
    model.fit(x_train[:256], batch_size=64, epochs=2, verbose=0, callbacks=[watcher])
    return model, watcher, path


def test_records_untrained_and_each_epoch(fitted):
    _, watcher, _ = fitted
    assert watcher.epochs == [0, 1, 2]
    assert len(watcher.images) == 3
    for images in watcher.images:
        assert images.shape == (6, 28, 28, 1)
        assert images.min() >= 0.0 and images.max() <= 1.0
    # Training changed the decoder, so the rows differ.
    assert not np.allclose(watcher.images[0], watcher.images[2], atol=1e-3)


def test_codes_are_fixed_and_seeded(fitted):
    model, watcher, _ = fitted
    expected = np.random.default_rng(1).standard_normal((6, 20)).astype("float32")
    np.testing.assert_array_equal(watcher.codes, expected)
    # The last row is what the trained decoder makes of those codes.
    np.testing.assert_allclose(watcher.images[-1], np.asarray(model.decode(expected)), atol=1e-6)


def test_strip_and_png(fitted, tmp_path):
    _, watcher, path = fitted
    strip = watcher.strip()
    assert strip.shape == (3 * 28, 6 * 28)
    np.testing.assert_array_equal(strip[28:56, 28:56], watcher.images[1][1, ..., 0])
    assert watcher.strip(epochs=[2]).shape == (28, 6 * 28)
    # The PNG written after the last epoch holds the whole strip.
    assert path.read_bytes()[:8] == PNG_MAGIC
    import matplotlib.image

    assert matplotlib.image.imread(path).shape[:2] == (3 * 28, 6 * 28)
    saved = watcher.save_strip(tmp_path / "sub" / "again.png", epochs=[0, 2])
    assert matplotlib.image.imread(saved).shape[:2] == (2 * 28, 6 * 28)


def test_plot_labels_rows_by_epoch(fitted):
    _, watcher, _ = fitted
    figure = watcher.plot(epochs=[0, 2])
    (axis,) = figure.axes
    assert [label.get_text() for label in axis.get_yticklabels()] == ["0", "2"]
    assert axis.images[0].get_array().shape == (2 * 28, 6 * 28)


def test_unrecorded_epoch_is_named(fitted):
    _, watcher, _ = fitted
    with pytest.raises(ValueError, match=r"\[7\]"):
        watcher.strip(epochs=[7])


def test_nothing_recorded_yet():
    with pytest.raises(ValueError, match="No images recorded"):
        DecodedSamples().strip()


@pytest.mark.parametrize("n", [0, 2.5, True])
def test_rejects_bad_n(n):
    with pytest.raises(ValueError, match=f"n={n!r}"):
        DecodedSamples(n=n)
