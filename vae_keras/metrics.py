"""The ELBO metric: the mean per-image ELBO loss over everything seen since the last reset."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="vae_keras")
class ELBO(keras.metrics.Metric):
    """Mean ELBO loss (reconstruction + KL) per image, accumulated over batches.

    Batches of different sizes are weighted by their number of images, so the
    result over the 10,000 test images is the same whatever the batch size:
    the figure the reference prints as "Test ELBO loss".

    Args:
        name: name of the metric instance.
        dtype: dtype of the metric's state.

    Example:

    >>> metric = ELBO()
    >>> metric.update_state(reconstruction_loss=[10.0, 20.0], kl_loss=[1.0, 3.0])
    >>> float(metric.result())
    17.0
    """

    def __init__(self, name="elbo", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable(shape=(), initializer="zeros", dtype=self.dtype, name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype=self.dtype, name="count")

    def update_state(self, reconstruction_loss, kl_loss, sample_weight=None):
        """Adds a batch of per-image loss terms.

        Args:
            reconstruction_loss: per-image reconstruction terms, shape (batch,).
            kl_loss: per-image KL terms, shape (batch,).
            sample_weight: optional per-image weights, shape (batch,).
        """
        values = ops.cast(reconstruction_loss, self.dtype) + ops.cast(kl_loss, self.dtype)
        if sample_weight is None:
            weights = ops.ones_like(values)
        else:
            weights = ops.broadcast_to(ops.cast(sample_weight, self.dtype), ops.shape(values))
        self.total.assign_add(ops.sum(values * weights))
        self.count.assign_add(ops.sum(weights))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)
