"""The sampling layer: the reparameterization trick z = mean + eps * exp(0.5 * logvar)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="vae_keras")
class Sampling(keras.layers.Layer):
    """Draws z ~ N(z_mean, exp(z_log_var)) so that gradients reach both inputs.

    Sampling from N(mean, sigma^2) is the same as computing
    `mean + eps * sigma` with eps ~ N(0, I): the randomness moves into eps,
    which has no parameters, and z stays differentiable in mean and sigma.
    The layer samples in training and in inference alike, as the reference's
    `sampling` function does for the test ELBO and the reconstructions.

    Args:
        seed: int or None, the seed of the layer's own
            `keras.random.SeedGenerator`. The same seed gives the same sequence
            of draws.
        **kwargs: base layer keyword arguments (`name`, `dtype`...).

    Call arguments:
        inputs: a pair `(z_mean, z_log_var)` of tensors of equal shape
            (batch, latent_dim).

    Returns:
        z, a tensor of the same shape.

    Example:

    >>> layer = Sampling(seed=1)
    >>> z = layer((keras.ops.zeros((4, 2)), keras.ops.zeros((4, 2))))
    >>> tuple(z.shape)
    (4, 2)
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"Invalid value received for argument `seed`. Expected an int or None. Received: seed={seed!r}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def call(self, inputs):
        z_mean, z_log_var = inputs
        epsilon = keras.random.normal(
            ops.shape(z_mean), dtype=z_mean.dtype, seed=self.seed_generator
        )
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        base_config = super().get_config()
        config = {"seed": self.seed}
        return {**base_config, **config}
