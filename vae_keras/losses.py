"""The reference's ELBO loss, per image, in `keras.ops`: reconstruction + KL, written once here."""

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


def kl_loss(z_mean, z_log_var):
    """Per-image KL(N(mean, exp(logvar)) || N(0, I)) in closed form: -0.5 * sum(1 + logvar - mean^2 - exp(logvar)).

    Args:
        z_mean: means of the approximate posterior, shape (batch, latent_dim).
        z_log_var: log-variances, same shape.

    Returns:
        A tensor of shape (batch,).
    """
    z_mean, z_log_var = ops.convert_to_tensor(z_mean), ops.convert_to_tensor(z_log_var)
    return -0.5 * ops.sum(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1)


def loss_terms(x, x_pred, z_mean, z_log_var):
    """The per-image ELBO loss and its two terms.

    Args:
        x: images, shape (batch, 28, 28, 1).
        x_pred: reconstructions (after the sigmoid), same shape.
        z_mean: code means, shape (batch, latent_dim).
        z_log_var: code log-variances, same shape.

    Returns:
        A dict of tensors of shape (batch,): `elbo` (reconstruction + KL, the
        negative ELBO up to a constant), `reconstruction_loss` and `kl_loss`.
    """
    reconstruction = reconstruction_loss(x, x_pred)
    kl = kl_loss(z_mean, z_log_var)
    return {"elbo": reconstruction + kl, "reconstruction_loss": reconstruction, "kl_loss": kl}


def elbo_loss(x, x_pred, z_mean, z_log_var):
    """The reference's ELBO loss: the batch mean of the per-image `loss_terms(...)["elbo"]`; a scalar tensor."""
    return ops.mean(loss_terms(x, x_pred, z_mean, z_log_var)["elbo"])
