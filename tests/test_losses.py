"""Tests for vae_keras.losses: the ELBO terms against their NumPy formulas."""

import numpy as np
import pytest
from keras import ops

from vae_keras import elbo_loss, kl_loss, reconstruction_loss


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
