"""How good is a trained VAE: the importance-weighted bound on log p(x) and the KL per latent dimension.

The formulas and references are in docs/design-notes.md; the ELBO's terms come from `vae_keras.losses`.
"""

import math

import numpy as np
from keras import ops

from vae_keras import losses
from vae_keras.config import check_int, check_number
from vae_keras.data import in_batches

# (Image, sample) pairs per decoder call in `iwae_bound`: bounds the memory (10,000 MNIST decodings: 31 MB of float32).
IWAE_BATCH_SIZE = 10_000
# Images per encoder call when encoding a data set.
ENCODE_BATCH_SIZE = 2_000
# A latent dimension whose KL, averaged over the images, exceeds this many nats is counted as active.
ACTIVE_THRESHOLD = 0.01


def log_importance_weights(x, x_pred, z, z_mean, z_log_var, likelihood="gaussian"):
    """log [p(x|z) p(z) / q(z|x)] per (image, code) pair, a float64 (n,) array, constants left out as in the ELBO loss.

    Args:
        x_pred: decodings of `z`, shaped as `x`: the images for "gaussian", the decoder's logits for "bernoulli".
        z: codes drawn from q(z|x) = N(z_mean, exp(z_log_var)), each (n, latent_dim).
        likelihood: the decoder's p(x|z), "gaussian" (the reference) or "bernoulli".

    Raises a ValueError if the shapes disagree.
    """
    x, x_pred, z, z_mean, z_log_var = (np.asarray(ops.convert_to_numpy(value), dtype="float64")
                                       for value in (x, x_pred, z, z_mean, z_log_var))
    if x.shape != x_pred.shape:
        raise ValueError(f"x and x_pred must have the same shape, received {x.shape} and {x_pred.shape}")
    if not (z.shape == z_mean.shape == z_log_var.shape) or z.ndim != 2 or len(z) != len(x):
        raise ValueError("z, z_mean and z_log_var must all have shape (n, latent_dim) with n the number of "
                         f"images ({len(x)}), received {z.shape}, {z_mean.shape} and {z_log_var.shape}")
    # The ELBO's reconstruction term is -log p(x|z) up to the constant the loss leaves out.
    reconstruction = losses.bernoulli_reconstruction_loss if likelihood == "bernoulli" else losses.reconstruction_loss
    log_likelihood = -ops.convert_to_numpy(reconstruction(x, x_pred)).astype("float64")
    log_prior = -0.5 * np.square(z).sum(axis=1)
    log_posterior = -0.5 * (z_log_var + np.square(z - z_mean) * np.exp(-z_log_var)).sum(axis=1)
    return log_likelihood + log_prior - log_posterior


def importance_weighted_loss(log_weights):
    """The IWAE bound per image, a float64 (n,) array in loss units, from its k log importance weights (n, k).

    Raises a ValueError if `log_weights` is not 2-D with at least one column.
    """
    log_weights = np.asarray(log_weights, dtype="float64")
    if log_weights.ndim != 2 or log_weights.shape[1] < 1:
        raise ValueError(f"log_weights must have shape (n, k) with k >= 1, received shape {log_weights.shape}")
    largest = log_weights.max(axis=1, keepdims=True)
    log_sum = largest[:, 0] + np.log(np.exp(log_weights - largest).sum(axis=1))
    return -(log_sum - math.log(log_weights.shape[1]))


def iwae_bound(model, x, k, batch_size=IWAE_BATCH_SIZE, seed=None, return_per_image=False, labels=None):
    """The importance-weighted bound on -log p(x) in ELBO-loss units (Burda et al. 2016).

    Args:
        model: a `vae_keras.VAE`, or an object with `encode`, `decode` and `latent_dim`.
        k: samples per image, a positive integer; k = 1 gives the ELBO loss, larger k a tighter bound.
        batch_size: (image, sample) pairs per decoder call (memory only).
        seed: NumPy seed of the codes' noise; None: random.
        return_per_image: return the (N,) float64 per-image bounds instead of their mean (a float).
        labels: the images' digits, for a conditional model (then a bound on -log p(x | y)).

    Raises a ValueError if `k` or `batch_size` is not a positive integer, or `x` holds no image.
    """
    check_int("k", k)
    check_int("batch_size", batch_size)
    x = np.asarray(x, dtype="float32")
    if len(x) == 0:
        raise ValueError(f"iwae_bound needs at least one image, received x of shape {x.shape}")
    z_mean, z_log_var = encode(model, x, labels)
    likelihood = getattr(model, "likelihood", "gaussian")
    decode = model.logits if likelihood == "bernoulli" else model.decode
    rng = np.random.default_rng(seed)
    n, latent_dim = z_mean.shape
    # Pair p stands for image p // k and sample p % k.
    log_weights = np.empty(n * k, dtype="float64")
    for start in range(0, n * k, batch_size):
        pairs = np.arange(start, min(start + batch_size, n * k))
        images = pairs // k
        epsilon = rng.standard_normal((len(pairs), latent_dim)).astype("float32")
        mean, log_var = z_mean[images], z_log_var[images]
        z = mean + np.exp(0.5 * log_var) * epsilon
        decoded = ops.convert_to_numpy(decode(z) if labels is None else decode(z, np.asarray(labels)[images]))
        log_weights[pairs] = log_importance_weights(x[images], decoded, z, mean, log_var, likelihood)
    per_image = importance_weighted_loss(log_weights.reshape(n, k))
    return per_image if return_per_image else float(per_image.mean())


def kl_per_dimension(model, x, batch_size=ENCODE_BATCH_SIZE, labels=None):
    """The KL term of each latent dimension in nats, averaged over the images: float64 (latent_dim,).

    Its sum is the mean KL loss. `labels`: the images' digits, for a conditional model; a ValueError if `x` is empty.
    """
    x = np.asarray(x, dtype="float32")
    if len(x) == 0:
        raise ValueError(f"kl_per_dimension needs at least one image, received x of shape {x.shape}")
    z_mean, z_log_var = encode(model, x, labels, batch_size=batch_size)
    terms = losses.kl_per_dimension_terms(z_mean.astype("float64"), z_log_var.astype("float64"))
    return ops.convert_to_numpy(terms).astype("float64").mean(axis=0)


def active_units(kl, threshold=ACTIVE_THRESHOLD):
    """Which latent dimensions are active: a boolean array, True where the mean KL `kl` exceeds `threshold` nats.

    `kl` as `kl_per_dimension` returns; `.sum()` of the result is the number of active units. Raises a
    ValueError if `threshold` is negative or not a number.
    """
    check_number("threshold", threshold, inclusive=True)
    return np.asarray(kl, dtype="float64") > threshold


def encode(model, x, labels=None, batch_size=ENCODE_BATCH_SIZE):
    """Encodes images in batches into float32 NumPy `(z_mean, z_log_var)`, each (N, latent_dim).

    `model`: a `vae_keras.VAE`, or any object whose `encode(x)` returns `(z_mean, z_log_var)`;
    `labels`: the images' digits (N,), needed by a conditional model; None: not passed.
    """
    inputs = x if labels is None else (np.asarray(x), np.asarray(labels))
    z_mean, z_log_var = in_batches(model.encode, inputs, batch_size)
    return z_mean.astype("float32"), z_log_var.astype("float32")
