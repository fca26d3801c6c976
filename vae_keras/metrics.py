"""The ELBO metric: the mean per-image ELBO loss over everything seen since the last reset."""

import keras


@keras.saving.register_keras_serializable(package="vae_keras")
class ELBO(keras.metrics.Mean):
    """Mean ELBO loss per image, accumulated over batches: the reference's "Test ELBO loss".

    A `keras.metrics.Mean` fed the per-image loss (`losses.loss_terms(...)["elbo"]`,
    reconstruction + KL): each batch counts by its number of images, so the
    result over the 10,000 test images does not depend on the batch size.

    Args:
        name: name of the metric instance.
        dtype: dtype of the metric's state.

    Example:

    >>> metric = ELBO()
    >>> metric.update_state([11.0, 23.0])
    >>> float(metric.result())
    17.0
    """

    def __init__(self, name="elbo", dtype=None):
        super().__init__(name=name, dtype=dtype)
