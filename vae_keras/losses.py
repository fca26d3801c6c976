"""The two terms of the reference's ELBO loss, per image, in `keras.ops`."""

from keras import ops


def reconstruction_loss(x, x_pred):
    """Per-image reconstruction term: sum over pixels of 0.5 * (x_pred - x)^2.

    This is the reference's `ELBOloss` reconstruction term (a Gaussian
    log-likelihood with unit variance, up to a constant).

    Args:
        x: images, shape (batch, 28, 28, 1), values in [0, 1].
        x_pred: reconstructions of the same shape (after the sigmoid).

    Returns:
        A tensor of shape (batch,).
    """
    squares = 0.5 * ops.square(ops.convert_to_tensor(x_pred) - ops.convert_to_tensor(x))
    return ops.sum(ops.reshape(squares, (ops.shape(squares)[0], -1)), axis=-1)


def kl_loss(z_mean, z_log_var):
    """Per-image KL(N(mean, exp(logvar)) || N(0, I)), in closed form.

    KL = -0.5 * sum_i (1 + logvar_i - mean_i^2 - exp(logvar_i)).

    Args:
        z_mean: means of the approximate posterior, shape (batch, latent_dim).
        z_log_var: log-variances, same shape.

    Returns:
        A tensor of shape (batch,).
    """
    z_mean, z_log_var = ops.convert_to_tensor(z_mean), ops.convert_to_tensor(z_log_var)
    return -0.5 * ops.sum(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1)


def elbo_loss(x, x_pred, z_mean, z_log_var):
    """The reference's ELBO loss: mean over the batch of reconstruction + KL.

    Args:
        x: images, shape (batch, 28, 28, 1).
        x_pred: reconstructions (after the sigmoid), same shape.
        z_mean: code means, shape (batch, latent_dim).
        z_log_var: code log-variances, same shape.

    Returns:
        A scalar tensor.
    """
    return ops.mean(reconstruction_loss(x, x_pred) + kl_loss(z_mean, z_log_var))
