"""Tests for vae_keras.losses: the ELBO terms against their NumPy formulas."""

import numpy as np
import pytest
from keras import ops

from vae_keras import elbo_loss, kl_loss, reconstruction_loss

# The quick subset for the edit-test loop: `pytest -m quick` (README).
pytestmark = pytest.mark.quick


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


def test_bernoulli_term_matches_numpy_binary_cross_entropy():
    from vae_keras.losses import bernoulli_reconstruction_loss

    rng = np.random.default_rng(2)
    x = rng.random((5, 28, 28, 1)).astype("float32")
    logits = rng.normal(scale=4.0, size=(5, 28, 28, 1)).astype("float32")
    p = 1 / (1 + np.exp(-logits.astype("float64")))
    expected = -np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=(1, 2, 3))
    np.testing.assert_allclose(ops.convert_to_numpy(bernoulli_reconstruction_loss(x, logits)), expected, rtol=1e-5)
    # Stable where a naive log(sigmoid) underflows.
    extreme = np.full((1, 28, 28, 1), 200.0, "float32")
    assert np.isfinite(ops.convert_to_numpy(bernoulli_reconstruction_loss(np.zeros_like(extreme), extreme)))[0]


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_beta_weights_the_kl_term_in_the_loss_only(likelihood):
    from vae_keras.losses import loss_terms

    rng = np.random.default_rng(3)
    x = rng.random((4, 28, 28, 1)).astype("float32")
    logits = rng.normal(size=(4, 28, 28, 1)).astype("float32")
    x_pred = (1 / (1 + np.exp(-logits))).astype("float32")
    mean, log_var = rng.normal(size=(4, 20)).astype("float32"), rng.normal(scale=0.3, size=(4, 20)).astype("float32")
    terms = {k: ops.convert_to_numpy(v) for k, v in loss_terms(x, x_pred, mean, log_var, logits, likelihood, 4.0).items()}
    if likelihood == "gaussian":
        reconstruction = 0.5 * np.sum((x_pred - x) ** 2, axis=(1, 2, 3))
    else:
        reconstruction = -np.sum(x * np.log(x_pred) + (1 - x) * np.log(1 - x_pred), axis=(1, 2, 3))
    kl = -0.5 * np.sum(1 + log_var - mean**2 - np.exp(log_var), axis=1)
    np.testing.assert_allclose(terms["reconstruction_loss"], reconstruction, rtol=1e-4)
    np.testing.assert_allclose(terms["elbo"], reconstruction + kl, rtol=1e-4)
    np.testing.assert_allclose(terms["loss"], reconstruction + 4.0 * kl, rtol=1e-4)
