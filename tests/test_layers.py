"""Tests for the Sampling layer, the loss terms and the ELBO metric, against NumPy."""

import keras
import numpy as np
import pytest
from keras import ops

from vae_keras import ELBO, Sampling, elbo_loss, kl_loss, reconstruction_loss


def test_sampling_shapes():
    layer = Sampling(seed=0)
    z = layer((ops.zeros((7, 5)), ops.zeros((7, 5))))
    assert tuple(z.shape) == (7, 5)
    assert layer.compute_output_shape(((7, 5), (7, 5))) == (7, 5)


def test_sampling_mean_and_variance_statistics():
    n, latent_dim = 200_000, 3
    mean = np.array([1.0, -2.0, 0.5], dtype="float32")
    log_var = np.array([0.0, np.log(4.0), np.log(0.25)], dtype="float32")
    z = ops.convert_to_numpy(
        Sampling(seed=1)((np.tile(mean, (n, 1)), np.tile(log_var, (n, 1))))
    )
    assert z.shape == (n, latent_dim)
    # Standard error of the mean: sigma / sqrt(n) <= 2 / 447 < 0.005.
    np.testing.assert_allclose(z.mean(axis=0), mean, atol=0.02)
    np.testing.assert_allclose(z.var(axis=0), np.exp(log_var), rtol=0.02)


def test_sampling_is_seeded():
    inputs = (np.zeros((4, 6), "float32"), np.zeros((4, 6), "float32"))
    first = ops.convert_to_numpy(Sampling(seed=3)(inputs))
    second = ops.convert_to_numpy(Sampling(seed=3)(inputs))
    layer = Sampling(seed=3)
    layer(inputs)
    third = ops.convert_to_numpy(layer(inputs))
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, third)


def test_sampling_gradient_reaches_mean_and_log_var(gradients):
    mean = np.zeros((3, 2), "float32")
    log_var = np.zeros((3, 2), "float32")
    layer = Sampling(seed=0)
    (grad_mean, grad_log_var), z = gradients(lambda m, v: layer((m, v)), [mean, log_var])
    np.testing.assert_allclose(grad_mean, 1.0)
    # d z / d logvar = 0.5 * eps * exp(0.5 * logvar) = 0.5 * (z - mean) at logvar 0.
    np.testing.assert_allclose(grad_log_var, 0.5 * z, rtol=1e-6)


def test_sampling_serializes():
    layer = Sampling(seed=7, name="sampler")
    config = layer.get_config()
    assert config["seed"] == 7
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, Sampling)
    assert restored.seed == 7 and restored.name == "sampler"


def test_sampling_rejects_bad_seed():
    with pytest.raises(ValueError, match="seed='x'"):
        Sampling(seed="x")


def test_reconstruction_matches_numpy_formula():
    rng = np.random.default_rng(0)
    x = rng.random((6, 28, 28, 1)).astype("float32")
    x_pred = rng.random((6, 28, 28, 1)).astype("float32")
    expected = np.array([np.sum(0.5 * (x_pred[i] - x[i]) ** 2) for i in range(6)])
    np.testing.assert_allclose(ops.convert_to_numpy(reconstruction_loss(x, x_pred)), expected, rtol=1e-5)


def test_kl_matches_closed_form():
    rng = np.random.default_rng(1)
    mean = rng.normal(size=(5, 20)).astype("float32")
    log_var = rng.normal(scale=0.5, size=(5, 20)).astype("float32")
    # KL(N(m, s^2) || N(0, 1)) = log(1 / s) + (s^2 + m^2) / 2 - 1/2, summed over dimensions.
    sigma = np.exp(0.5 * log_var.astype("float64"))
    expected = np.sum(np.log(1 / sigma) + (sigma**2 + mean**2) / 2 - 0.5, axis=1)
    np.testing.assert_allclose(ops.convert_to_numpy(kl_loss(mean, log_var)), expected, rtol=1e-5)


def test_kl_is_zero_for_the_prior():
    zeros = np.zeros((3, 20), "float32")
    np.testing.assert_allclose(ops.convert_to_numpy(kl_loss(zeros, zeros)), 0.0, atol=1e-7)


def test_elbo_loss_is_batch_mean_of_both_terms():
    rng = np.random.default_rng(2)
    x = rng.random((4, 28, 28, 1)).astype("float32")
    x_pred = rng.random((4, 28, 28, 1)).astype("float32")
    mean = rng.normal(size=(4, 20)).astype("float32")
    log_var = rng.normal(size=(4, 20)).astype("float32")
    reconstruction = 0.5 * ((x_pred - x) ** 2).reshape(4, -1).sum(axis=1)
    kl = -0.5 * (1 + log_var - mean**2 - np.exp(log_var)).sum(axis=1)
    expected = np.mean(reconstruction + kl)
    assert float(elbo_loss(x, x_pred, mean, log_var)) == pytest.approx(expected, rel=1e-5)


def test_elbo_metric_weights_batches_by_size():
    metric = ELBO()
    metric.update_state([10.0 + 1.0, 20.0 + 3.0])
    metric.update_state([4.0 + 0.0])
    assert float(metric.result()) == pytest.approx((11 + 23 + 4) / 3)
    metric.reset_state()
    assert float(metric.result()) == 0.0
    metric.update_state([2.0, 8.0], sample_weight=[3.0, 1.0])
    assert float(metric.result()) == pytest.approx((6 + 8) / 4)


def test_elbo_metric_serializes():
    metric = ELBO(name="test_elbo")
    restored = ELBO.from_config(metric.get_config())
    assert restored.name == "test_elbo"
