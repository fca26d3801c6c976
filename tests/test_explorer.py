"""Tests for vae_keras.explorer: the sliders move the code, the digit follows, a static figure stands in without a kernel."""

import numpy as np
import pytest
from keras import ops

import vae_keras

explorer = pytest.importorskip("vae_keras.explorer", reason="ipywidgets is not installed")


@pytest.fixture(scope="module")
def images():
    (_, _), (x_test, _) = vae_keras.load_mnist()
    return x_test[:200]


def test_a_2d_model_has_one_slider_per_coordinate_and_the_digit_follows(images):
    model = vae_keras.VAE(latent_dim=2, seed=0)
    widget = explorer.LatentExplorer(model, span=2.0)
    assert [slider.description for slider in widget.sliders] == ["z_1", "z_2"]
    before = widget.image.value
    widget.sliders[0].value, widget.sliders[1].value = 1.5, -0.5
    np.testing.assert_allclose(widget.code(), [1.5, -0.5])
    assert widget.image.value != before  # redrawn by the slider's observer
    expected = ops.convert_to_numpy(model.decode(np.array([[1.5, -0.5]], "float32")))[0, ..., 0]
    np.testing.assert_allclose(widget.decoded(), expected, atol=1e-6)


def test_a_20d_model_moves_along_the_principal_directions_of_the_code_means(images):
    from sklearn.decomposition import PCA

    model = vae_keras.load_vae()
    widget = explorer.LatentExplorer(model, images, directions=3)
    z_mean, _ = vae_keras.analysis.encode(model, images)
    pca = PCA(n_components=3).fit(z_mean)
    np.testing.assert_allclose(widget.code(), z_mean.mean(axis=0), atol=1e-5)
    widget.sliders[1].value = 1.0
    expected = z_mean.mean(axis=0) + np.sqrt(pca.explained_variance_[1]) * pca.components_[1]
    np.testing.assert_allclose(widget.code(), expected, atol=1e-4)
    with pytest.raises(ValueError, match="latent_dim=20 needs images x"):
        explorer.LatentExplorer(model)
    with pytest.raises(ValueError, match="directions=0"):
        explorer.LatentExplorer(model, images, directions=0)


def test_the_interpolation_slider_runs_from_one_code_mean_to_the_other(images):
    model = vae_keras.load_vae()
    widget = explorer.InterpolationExplorer(model, images[0], images[1])
    z_mean, _ = vae_keras.analysis.encode(model, images[:2])
    np.testing.assert_allclose(widget.code(), z_mean[0], atol=1e-5)
    widget.sliders[0].value = 1.0
    np.testing.assert_allclose(widget.code(), z_mean[1], atol=1e-5)


def test_without_a_kernel_a_static_figure_stands_in(images):
    widget = explorer.LatentExplorer(vae_keras.VAE(latent_dim=2, seed=0))
    bundle = widget._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["image/png"].startswith(b"\x89PNG")
    figure = widget.static_figure(n=5)
    assert figure.axes[0].images[0].get_array().shape == (2 * 28, 5 * 28)  # one row per slider


def test_a_conditional_model_gets_a_digit_selector_that_redraws_the_same_code(images):
    model = vae_keras.ConditionalVAE(latent_dim=2, seed=0)
    widget = explorer.LatentExplorer(model, digit=3)
    assert widget.digit_selector.options == tuple(range(10)) and widget.digit_selector.value == 3
    widget.sliders[0].value = 1.0
    before = widget.image.value
    widget.digit_selector.value = 8
    assert widget.image.value != before  # redrawn by the selector's observer
    expected = ops.convert_to_numpy(model.decode(np.array([[1.0, 0.0]], "float32"), np.array([8])))[0, ..., 0]
    np.testing.assert_allclose(widget.decoded(), expected, atol=1e-6)
    assert widget._repr_mimebundle_()["image/png"].startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="digit=10"):
        explorer.LatentExplorer(model, digit=10)
    (_, _), (x_test, y_test) = vae_keras.load_mnist()
    wide = vae_keras.ConditionalVAE(latent_dim=6, seed=0)
    with pytest.raises(ValueError, match="pass y"):
        explorer.LatentExplorer(wide, x_test[:50])
    assert len(explorer.LatentExplorer(wide, x_test[:50], y=y_test[:50]).sliders) == 2
    pair = explorer.InterpolationExplorer(wide, x_test[0], x_test[1], digits=(y_test[0], y_test[1]))
    assert pair.digit_selector.value == y_test[0]
    with pytest.raises(ValueError, match="digits=\\(start, end\\)"):
        explorer.InterpolationExplorer(wide, x_test[0], x_test[1])
