"""The ELBO loss, per image, in `keras.ops`: reconstruction + KL, written once here.

The reference's decoder is a Gaussian of variance 1 on each pixel (the
reconstruction term is half the summed squared error); `likelihood="bernoulli"`
reads the decoder's output as the probability of each pixel being on, as
keras.io's and TensorFlow's examples do (the summed binary cross-entropy).
"""

from keras import ops


def reconstruction_loss(x, x_pred):
    """Per-image reconstruction term: the sum over pixels of 0.5 * (x_pred - x)^2.

    The reference's `ELBOloss` reconstruction term: minus a Gaussian
    log-likelihood with unit variance, up to a constant.

    Args:
        x: images, shape (batch, 28, 28, 1), values in [0, 1].
        x_pred: reconstructions of the same shape (after the sigmoid).

    Returns:
        A tensor of shape (batch,).
    """
    squares = 0.5 * ops.square(ops.convert_to_tensor(x_pred) - ops.convert_to_tensor(x))
    return ops.sum(ops.reshape(squares, (ops.shape(squares)[0], -1)), axis=-1)


def bernoulli_reconstruction_loss(x, logits):
    """Per-image reconstruction term of a Bernoulli decoder: the binary cross-entropy summed over pixels.

    Computed from the logits, stably: max(l, 0) - l * x + log(1 + exp(-|l|)).
    `x` may be grey levels in [0, 1] (the "continuous Bernoulli" use of every tutorial).

    Returns:
        A tensor of shape (batch,).
    """
    logits, x = ops.convert_to_tensor(logits), ops.convert_to_tensor(x)
    terms = ops.maximum(logits, 0.0) - logits * x + ops.log1p(ops.exp(-ops.abs(logits)))
    return ops.sum(ops.reshape(terms, (ops.shape(terms)[0], -1)), axis=-1)


def kl_per_dimension_terms(z_mean, z_log_var):
    """The KL term of each image and latent dimension: -0.5 * (1 + logvar - mean^2 - exp(logvar)).

    Args:
        z_mean: means of the approximate posterior, shape (batch, latent_dim).
        z_log_var: log-variances, same shape.

    Returns:
        A tensor of shape (batch, latent_dim).
    """
    z_mean, z_log_var = ops.convert_to_tensor(z_mean), ops.convert_to_tensor(z_log_var)
    return -0.5 * (1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))


def kl_loss(z_mean, z_log_var):
    """Per-image KL(N(mean, exp(logvar)) || N(0, I)) in closed form: `kl_per_dimension_terms` summed, shape (batch,)."""
    return ops.sum(kl_per_dimension_terms(z_mean, z_log_var), axis=-1)


def loss_terms(x, x_pred, z_mean, z_log_var, logits=None, likelihood="gaussian", kl_weight=1.0):
    """The per-image ELBO loss, its two terms, and the training loss with a weighted KL term.

    Args:
        x, x_pred: images and their reconstructions (after the sigmoid), (batch, 28, 28, 1).
        z_mean, z_log_var: the codes' means and log-variances, (batch, latent_dim).
        logits: the decoder's outputs before the sigmoid; needed for "bernoulli".
        likelihood: "gaussian" (the reference) or "bernoulli".
        kl_weight: the KL term's weight in `loss` (beta of a beta-VAE); `elbo` keeps weight 1.

    Returns:
        A dict of tensors of shape (batch,): `elbo` (reconstruction + KL, the
        negative ELBO up to a constant), `reconstruction_loss`, `kl_loss`, and
        `loss` (reconstruction + kl_weight * KL, what training minimises).
    """
    if likelihood == "bernoulli":
        reconstruction = bernoulli_reconstruction_loss(x, logits)
    else:
        reconstruction = reconstruction_loss(x, x_pred)
    kl = kl_loss(z_mean, z_log_var)
    return {
        "elbo": reconstruction + kl,
        "reconstruction_loss": reconstruction,
        "kl_loss": kl,
        "loss": reconstruction + kl_weight * kl,
    }


def elbo_loss(x, x_pred, z_mean, z_log_var):
    """The reference's ELBO loss: the batch mean of the per-image `loss_terms(...)["elbo"]`; a scalar tensor."""
    return ops.mean(loss_terms(x, x_pred, z_mean, z_log_var)["elbo"])
