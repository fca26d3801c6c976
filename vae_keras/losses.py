"""The ELBO loss, per image, in `keras.ops`: reconstruction + KL, written once here.

The reference's decoder is a Gaussian of variance 1 on each pixel (the
reconstruction term is half the summed squared error); `likelihood="bernoulli"`
reads the decoder's output as the probability of each pixel being on, as
keras.io's and TensorFlow's examples do (the summed binary cross-entropy).
Every function returns one value per image, shape (batch,), unless it says otherwise.
"""

from keras import ops


def _per_image_sum(terms):
    return ops.sum(ops.reshape(terms, (ops.shape(terms)[0], -1)), axis=-1)


def reconstruction_loss(x, x_pred):
    """The reference's reconstruction term: the sum over pixels of 0.5 * (x_pred - x)^2.

    Minus a Gaussian log-likelihood of unit variance, up to a constant; `x_pred`
    is the decoder's output after the sigmoid, `x` the images in [0, 1].
    """
    return _per_image_sum(0.5 * ops.square(ops.convert_to_tensor(x_pred) - ops.convert_to_tensor(x)))


def bernoulli_reconstruction_loss(x, logits):
    """A Bernoulli decoder's term: the binary cross-entropy summed over pixels, from the logits.

    Computed stably as max(l, 0) - l * x + log(1 + exp(-|l|)); `x` may be grey
    levels in [0, 1] (the "continuous Bernoulli" use of every tutorial).
    """
    logits, x = ops.convert_to_tensor(logits), ops.convert_to_tensor(x)
    return _per_image_sum(ops.maximum(logits, 0.0) - logits * x + ops.log1p(ops.exp(-ops.abs(logits))))


def kl_per_dimension_terms(z_mean, z_log_var):
    """The KL term of each image and latent dimension, (batch, latent_dim): -0.5 * (1 + logvar - mean^2 - exp(logvar))."""
    z_mean, z_log_var = ops.convert_to_tensor(z_mean), ops.convert_to_tensor(z_log_var)
    return -0.5 * (1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))


def kl_loss(z_mean, z_log_var):
    """KL(N(mean, exp(logvar)) || N(0, I)) in closed form: `kl_per_dimension_terms` summed over the dimensions."""
    return ops.sum(kl_per_dimension_terms(z_mean, z_log_var), axis=-1)


def loss_terms(x, x_pred, z_mean, z_log_var, logits=None, likelihood="gaussian", kl_weight=1.0):
    """The per-image ELBO loss, its two terms, and the training loss with a weighted KL term.

    `x_pred` is the reconstruction after the sigmoid; `logits` (before it) is
    needed for `likelihood="bernoulli"`; `kl_weight` is a beta-VAE's beta.

    Returns:
        A dict of (batch,) tensors: `elbo` (reconstruction + KL, the negative ELBO
        up to a constant), `reconstruction_loss`, `kl_loss`, and `loss`
        (reconstruction + kl_weight * KL, what training minimises).
    """
    if likelihood == "bernoulli":
        reconstruction = bernoulli_reconstruction_loss(x, logits)
    else:
        reconstruction = reconstruction_loss(x, x_pred)
    kl = kl_loss(z_mean, z_log_var)
    return {"elbo": reconstruction + kl, "reconstruction_loss": reconstruction, "kl_loss": kl,
            "loss": reconstruction + kl_weight * kl}


def elbo_loss(x, x_pred, z_mean, z_log_var):
    """The reference's ELBO loss: the batch mean of the per-image `loss_terms(...)["elbo"]`; a scalar tensor."""
    return ops.mean(loss_terms(x, x_pred, z_mean, z_log_var)["elbo"])
