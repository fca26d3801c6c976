"""Tests for vae_keras.layers: the Sampling layer, against NumPy."""

import keras
import numpy as np
import pytest
from keras import ops

from vae_keras import Sampling

# The quick subset for the edit-test loop: `pytest -m quick` (README).
pytestmark = pytest.mark.quick


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


def test_every_epoch_of_a_long_run_draws_its_own_noise():
    # Streams 0-4095 keep the seed as the generator's key (the shipped runs' noise);
    # later ones move on to other keys, so epoch 4097 and 10,000 draw fresh noise.
    layer = Sampling(seed=5)
    inputs = (np.zeros((2, 3), "float32"), np.zeros((2, 3), "float32"))
    draws = {}
    for stream in (0, 1, 4095, 4096, 4097, 10_000, 8191 + 4096):
        layer.reseed(5, stream=stream)
        draws[stream] = ops.convert_to_numpy(layer(inputs)).tobytes()
    assert len(set(draws.values())) == len(draws)
    def state():  # as unsigned 32-bit words (PyTorch keeps them in int32)
        return (ops.convert_to_numpy(layer.seed_generator.state).astype("int64") % 2**32).tolist()

    layer.reseed(5, stream=1)
    assert state() == [5, 1 << 20]
    layer.reseed(5, stream=4096)
    assert state() == [(5 + 0x9E3779B9) % 2**32, 0]
