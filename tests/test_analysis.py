"""Tests for vae_keras.analysis: the IWAE bound against a model with a known log p(x), the KL per dimension."""

import math

import numpy as np
import pytest

import vae_keras
from vae_keras import analysis

# A linear-Gaussian "VAE" with 4 pixels and 2 latent dimensions:
# p(z) = N(0, I), p(x|z) = N(W z + b, I), so p(x) = N(b, W W^T + I) exactly.
# W's columns are orthogonal, so the exact posterior is diagonal and the
# encoder below can represent it.
PIXELS, LATENT = 4, 2
COLUMN_SCALES = np.array([2.0, 0.5])
_Q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((PIXELS, LATENT)))
W = _Q * COLUMN_SCALES  # W^T W = diag(COLUMN_SCALES^2)
B = np.array([0.1, -0.2, 0.3, 0.0])


class LinearGaussianModel:
    """A decoder x_pred = W z + b and a Gaussian encoder: exact posterior, or a deliberately wrong one."""

    latent_dim = LATENT

    def __init__(self, exact=True):
        self.exact = exact

    def encode(self, x):
        """The posterior's means and log-variances (exact, or shifted and widened)."""
        x = np.asarray(x, dtype="float64")
        variance = 1.0 / (1.0 + COLUMN_SCALES**2)  # diag of (I + W^T W)^-1
        mean = (x - B) @ W * variance
        if not self.exact:
            mean, variance = mean + 0.4, variance * 3.0
        return mean.astype("float32"), np.log(np.broadcast_to(variance, mean.shape)).astype("float32")

    def decode(self, z):
        """The decoder's mean W z + b."""
        return (np.asarray(z, dtype="float64") @ W.T + B).astype("float32")


def exact_loss(x):
    """-log p(x) per image with the decoder's PIXELS * 0.5 * log(2 pi) left out, from N(b, W W^T + I)."""
    covariance = W @ W.T + np.eye(PIXELS)
    centred = x - B
    mahalanobis = np.einsum("ni,ij,nj->n", centred, np.linalg.inv(covariance), centred)
    return 0.5 * mahalanobis + 0.5 * np.linalg.slogdet(covariance)[1]


def elbo_loss_closed_form(model, x):
    """The ELBO loss of the linear-Gaussian model in closed form: E_q[0.5 |x - W z - b|^2] + KL."""
    mean, log_var = (m.astype("float64") for m in model.encode(x))
    variance = np.exp(log_var)
    residual = x - B - mean @ W.T
    reconstruction = 0.5 * np.square(residual).sum(axis=1) + 0.5 * (COLUMN_SCALES**2 * variance).sum(axis=1)
    kl = -0.5 * (1 + log_var - mean**2 - variance).sum(axis=1)
    return reconstruction + kl


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((40, LATENT))
    return (z @ W.T + B + rng.standard_normal((40, PIXELS))).astype("float32")


def test_importance_weighted_loss_matches_the_direct_formula():
    rng = np.random.default_rng(0)
    log_weights = rng.normal(-20.0, 3.0, size=(5, 7))
    direct = -np.log(np.exp(log_weights).mean(axis=1))
    np.testing.assert_allclose(analysis.importance_weighted_loss(log_weights), direct, rtol=1e-12)


def test_importance_weighted_loss_does_not_underflow():
    # exp(-800) is 0 in float64; the log-sum-exp form still gives the answer.
    result = analysis.importance_weighted_loss(np.array([[-800.0, -800.0 + math.log(3.0)]]))
    np.testing.assert_allclose(result, [800.0 - math.log(2.0)], rtol=1e-12)


def test_importance_weighted_loss_rejects_a_vector():
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        analysis.importance_weighted_loss(np.zeros(3))


def test_log_importance_weights_match_the_gaussian_densities():
    rng = np.random.default_rng(2)
    x, x_pred = rng.random((3, 5)), rng.random((3, 5))
    z, z_mean = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    z_log_var = rng.normal(0.0, 0.5, (3, 2))

    def log_normal(value, mean, variance):
        return (-0.5 * np.log(2 * np.pi * variance) - 0.5 * (value - mean) ** 2 / variance).sum(axis=1)

    full = log_normal(x, x_pred, 1.0) + log_normal(z, 0.0, 1.0) - log_normal(z, z_mean, np.exp(z_log_var))
    # The package leaves out the decoder's constant 5 * 0.5 * log(2 pi).
    expected = full + 5 * 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(analysis.log_importance_weights(x, x_pred, z, z_mean, z_log_var), expected)


def test_iwae_bound_with_the_exact_posterior_is_exact_for_any_k(images):
    # With q(z|x) = p(z|x), every importance weight equals p(x).
    model = LinearGaussianModel(exact=True)
    for k in (1, 3):
        per_image = analysis.iwae_bound(model, images, k=k, seed=0, return_per_image=True)
        np.testing.assert_allclose(per_image, exact_loss(images), rtol=1e-4)


def test_iwae_bound_tightens_towards_log_p_x(images):
    model = LinearGaussianModel(exact=False)
    exact = exact_loss(images).mean()
    elbo = elbo_loss_closed_form(model, images).mean()
    assert elbo > exact + 0.5  # the wrong posterior leaves a clear gap
    bounds = {k: analysis.iwae_bound(model, images, k=k, seed=0) for k in (1, 10, 100, 2000)}
    # k = 1 is the ELBO loss in expectation: 40 images x 1 sample, so within MC noise.
    assert bounds[1] == pytest.approx(elbo, abs=0.3)
    assert bounds[1] > bounds[10] > bounds[100] > bounds[2000] > exact
    assert bounds[2000] - exact < 0.05 * (elbo - exact)


def test_iwae_bound_with_one_sample_averages_to_the_elbo(images):
    model = LinearGaussianModel(exact=False)
    repeated = np.repeat(images, 500, axis=0)  # 20,000 one-sample estimates
    assert analysis.iwae_bound(model, repeated, k=1, seed=0) == pytest.approx(
        elbo_loss_closed_form(model, images).mean(), abs=0.05
    )


def test_iwae_bound_does_not_depend_on_the_batch_size(images):
    model = LinearGaussianModel(exact=False)
    # The same seed draws the same noise in the same order, whatever the chunking.
    one = analysis.iwae_bound(model, images, k=7, seed=3, batch_size=1_000)
    many = analysis.iwae_bound(model, images, k=7, seed=3, batch_size=9)
    assert one == pytest.approx(many, rel=1e-6)


@pytest.mark.parametrize("argument", [{"k": 0}, {"k": 2.0}, {"k": 2, "batch_size": 0}])
def test_iwae_bound_rejects_bad_arguments(images, argument):
    name = "batch_size" if "batch_size" in argument else "k"
    with pytest.raises(ValueError, match=name):
        analysis.iwae_bound(LinearGaussianModel(), images, **{"k": 1, **argument})


def test_iwae_bound_on_the_vae_with_one_sample_is_its_elbo_loss(mnist):
    (_, _), (x_test, _) = mnist
    model = vae_keras.VAE(seed=0)
    x = x_test[:64]
    z_mean, z_log_var = analysis.encode(model, x)
    # Closed-form KL plus a reconstruction term averaged over 20 samples per image.
    kl = -0.5 * (1 + z_log_var - z_mean**2 - np.exp(z_log_var)).sum(axis=1)
    rng = np.random.default_rng(5)
    reconstructions = []
    for _ in range(20):
        z = z_mean + np.exp(0.5 * z_log_var) * rng.standard_normal(z_mean.shape).astype("float32")
        x_pred = np.asarray(model.decode(z))
        reconstructions.append(0.5 * np.square(x_pred - x).reshape(len(x), -1).sum(axis=1))
    elbo = float((np.mean(reconstructions, axis=0) + kl).mean())
    one_sample = np.mean([analysis.iwae_bound(model, x, k=1, seed=seed) for seed in range(20)])
    assert one_sample == pytest.approx(elbo, rel=0.01)
    assert analysis.iwae_bound(model, x, k=20, seed=0) < one_sample


def test_kl_per_dimension_matches_numpy(mnist):
    (_, _), (x_test, _) = mnist
    model = vae_keras.VAE(seed=0)
    x = x_test[:50]
    kl = analysis.kl_per_dimension(model, x, batch_size=16)
    z_mean, z_log_var = (np.asarray(t, dtype="float64") for t in model.encode(x))
    expected = (-0.5 * (1 + z_log_var - z_mean**2 - np.exp(z_log_var))).mean(axis=0)
    assert kl.shape == (20,)
    np.testing.assert_allclose(kl, expected, rtol=1e-5, atol=1e-7)
    # Summed over the dimensions, it is the package's KL loss.
    kl_loss = np.asarray(vae_keras.kl_loss(*model.encode(x)))
    assert kl.sum() == pytest.approx(kl_loss.mean(), rel=1e-5)


def test_kl_per_dimension_of_the_linear_model():
    model = LinearGaussianModel(exact=True)
    x = np.tile(B, (3, 1)).astype("float32")  # x = b: the posterior mean is 0
    variance = 1.0 / (1.0 + COLUMN_SCALES**2)
    expected = -0.5 * (1 + np.log(variance) - variance)
    np.testing.assert_allclose(analysis.kl_per_dimension(model, x), expected, rtol=1e-5)


def test_active_units_counts_dimensions_above_the_threshold():
    kl = np.array([1.3, 0.001, 0.02, 0.0, 0.5])
    np.testing.assert_array_equal(analysis.active_units(kl), [True, False, True, False, True])
    assert analysis.active_units(kl, threshold=0.1).sum() == 2


def test_active_units_rejects_a_negative_threshold():
    with pytest.raises(ValueError, match="threshold=-1"):
        analysis.active_units(np.ones(3), threshold=-1)


def test_kl_per_dimension_rejects_no_images():
    with pytest.raises(ValueError, match=r"\(0, 28, 28, 1\)"):
        analysis.kl_per_dimension(vae_keras.VAE(seed=0), np.zeros((0, 28, 28, 1)))


def test_log_importance_weights_of_a_bernoulli_decoder_use_the_cross_entropy():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(4, 28, 28, 1))
    logits = rng.normal(scale=3.0, size=x.shape)
    z, z_mean = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    z_log_var = rng.normal(scale=0.3, size=(4, 3))
    p = 1.0 / (1.0 + np.exp(-logits))
    log_likelihood = (x * np.log(p) + (1 - x) * np.log(1 - p)).reshape(4, -1).sum(axis=1)
    gaussian = analysis.log_importance_weights(x, logits, z, z_mean, z_log_var)
    gaussian_likelihood = -0.5 * np.square(logits - x).reshape(4, -1).sum(axis=1)
    np.testing.assert_allclose(
        analysis.log_importance_weights(x, logits, z, z_mean, z_log_var, likelihood="bernoulli"),
        gaussian - gaussian_likelihood + log_likelihood,
        rtol=1e-10,
    )


def test_iwae_bound_of_a_conditional_bernoulli_vae_with_one_sample_is_its_elbo_loss(mnist):
    (_, _), (x_test, y_test) = mnist
    model = vae_keras.ConditionalVAE(latent_dim=4, seed=0, likelihood="bernoulli")
    x, y = x_test[:64], y_test[:64]
    model.compile()
    elbo = np.mean([vae_keras.evaluate(model, x, y)["elbo"] for _ in range(10)])
    one_sample = np.mean([analysis.iwae_bound(model, x, k=1, seed=seed, labels=y) for seed in range(10)])
    assert one_sample == pytest.approx(elbo, rel=0.01)
