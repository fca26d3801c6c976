"""The ELBO metric: the mean per-image ELBO loss over everything seen since the last reset."""

import keras


@keras.saving.register_keras_serializable(package="vae_keras")
class ELBO(keras.metrics.Mean):
    """Mean ELBO loss per image over the batches seen: the reference's "Test ELBO loss".

    Feed it per-image losses (`losses.loss_terms(...)["elbo"]`); each batch counts by
    its number of images, so the result does not depend on the batch size.
    """

    def __init__(self, name="elbo", dtype=None):
        super().__init__(name=name, dtype=dtype)
