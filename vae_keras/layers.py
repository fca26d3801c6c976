"""The sampling layer: the reparameterization trick z = mean + eps * exp(0.5 * logvar)."""

import contextlib

import keras
import numpy as np
from keras import ops

# A generator's state is [key, counter], both 32-bit, the counter advancing
# once per draw: a stream of `reseed` holds this many draws, and one key this
# many streams (2**32 / 2**20) before the next key takes over.
_STREAM_LENGTH = 1 << 20
_STREAMS_PER_KEY = 1 << 12
# The next key: the seed plus a multiple of this odd constant (2**32 / golden ratio).
_KEY_STEP = 0x9E3779B9


@keras.saving.register_keras_serializable(package="vae_keras")
class Sampling(keras.layers.Layer):
    """Reparameterized sampling: z = z_mean + eps * exp(0.5 * z_log_var), eps ~ N(0, I).

    Called on a pair `(z_mean, z_log_var)` of (batch, latent_dim) tensors; samples
    in training and in inference alike (docs/design-notes.md). `seed` seeds the
    layer's own `keras.random.SeedGenerator` (None: random).
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def call(self, inputs):
        z_mean, z_log_var = inputs
        epsilon = keras.random.normal(ops.shape(z_mean), dtype=z_mean.dtype, seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    def reseed(self, seed, stream=0):
        """Restarts the noise: the draws that follow depend on `seed` (0 to 2**32 - 1) and `stream` (>= 0) alone.

        Training uses the epoch as the stream; a stream holds 2**20 draws;
        streams 0-4095 keep the key `seed`, later ones move to the next keys.
        """
        block, offset = divmod(int(stream), _STREAMS_PER_KEY)
        key = (int(seed) + block * _KEY_STEP) % (1 << 32)
        self.seed_generator.state.assign(np.array([key, offset * _STREAM_LENGTH], dtype="uint32"))

    @contextlib.contextmanager
    def seeded(self, seed):
        """Within the block the noise is reseeded with `seed` (None: left as is); afterwards it is put back."""
        if seed is None:
            yield
            return
        saved = ops.convert_to_numpy(self.seed_generator.state.value)
        self.reseed(seed)
        try:
            yield
        finally:
            self.seed_generator.state.assign(saved)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
