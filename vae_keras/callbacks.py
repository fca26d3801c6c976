"""The callbacks of a training run, one job each: the epoch's noise and KL weight, the reference's line, stopping, decoded samples."""

import math
import signal
import threading
import time
from pathlib import Path

import keras
import matplotlib.figure
import numpy as np
from keras import ops

from vae_keras import plotting
from vae_keras.checks import check_int


class EpochStart(keras.callbacks.Callback):
    """Sets what depends on the epoch alone at its start, so that a resumed run repeats an uninterrupted one.

    The sampling noise restarts from a stream of the seed and the epoch, and a
    KL warm-up's weight is `beta * min(1, epoch / kl_warmup_epochs)`.
    """

    def __init__(self, seed):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        self.model.sampling.reseed(self.seed, stream=epoch)
        if self.model.kl_weight is not None:
            self.model.kl_weight.assign(kl_weight_at(self.model, epoch))


def kl_weight_at(model, epoch):
    """The KL term's weight in epoch `epoch` (0-based): beta, reached linearly over the warm-up's epochs."""
    if not model.kl_warmup_epochs:
        return model.beta
    return model.beta * min(1.0, epoch / model.kl_warmup_epochs)


class ReferenceLine(keras.callbacks.Callback):
    """Times each epoch's training without its test pass, logs it as `epoch_seconds` and prints the reference's line."""

    def __init__(self, verbose=True):
        super().__init__()
        self.verbose = verbose

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._end = time.perf_counter(), None

    def on_train_batch_end(self, batch, logs=None):
        self._end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["epoch_seconds"] = (self._end or time.perf_counter()) - self._start
        if self.verbose and logs.get("val_elbo") is not None:
            print(
                f"Epoch : {epoch + 1} Test ELBO loss = {float(logs['val_elbo']):.4f}. "
                f"Time taken for epoch = {logs['epoch_seconds']:.4f}s",
                flush=True,
            )


class StopOnDivergence(keras.callbacks.Callback):
    """Stops training when it can no longer learn: a NaN or infinite loss, or a dead decoder.

    A decoder is dead when it draws one flat image for every code (its units
    output 0 whatever they are given), as a too-high learning rate leaves it;
    no gradient reaches it again, so the run would end with a model that draws
    grey squares. The epoch that showed it is not kept.

    Attributes:
        problem: None, or what happened, for the error `train` raises.
    """

    def __init__(self, learning_rate=None):
        super().__init__()
        self.learning_rate = learning_rate
        self.problem = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("elbo")
        if loss is not None and not math.isfinite(float(loss)):
            self._stop(f"the loss became NaN or infinite at epoch {self._epoch + 1}, batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        if self.problem is None:
            codes = self.model.prior_codes(16, seed=0)
            images = self.model.decode_codes(codes, self.model.prior_labels(16))
            if np.ptp(images) < 1e-6:
                self._stop(
                    f"after epoch {epoch + 1} the decoder draws the same flat image (grey level "
                    f"{float(images.flat[0]):.3f}) for every code: its units died and cannot learn again"
                )

    def _stop(self, problem):
        self.problem = problem + f" (learning_rate={self.learning_rate}; too high a learning rate is the usual cause)"
        self.model.stop_training = True


class StopOnCtrlC(keras.callbacks.Callback):
    """Turns a Ctrl-C (SIGINT) during `fit` into a `KeyboardInterrupt` at the next batch's end, never lost.

    Python runs a signal handler wherever the main thread is, a garbage-collector
    callback included, and an exception raised there is printed and ignored
    (JAX's `_xla_gc_callback` swallowed one in 32 Ctrl-Cs). This handler only
    records the signal; the callback raises it where `fit` can stop. A second
    Ctrl-C interrupts at once. Use as a context manager around `fit`.
    """

    def __init__(self):
        super().__init__()
        self.pressed = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exception):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False

    def _handler(self, signum, frame):
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    def _check(self, *args, **kwargs):
        if self.pressed:
            raise KeyboardInterrupt

    on_train_batch_end = on_test_batch_end = on_epoch_begin = on_epoch_end = _check


class DecodedSamples(keras.callbacks.Callback):
    """Decodes the same codes, drawn once from N(0, I), after every epoch (and before the first, if untrained).

    Args:
        n: number of codes, a positive integer.
        seed: seed of the codes (NumPy).
        path: a PNG file the strip is rewritten to after every epoch; None: none.

    Attributes:
        codes: the (n, latent_dim) float32 codes, once training has begun.
        epochs: the epoch after which each row was decoded (0: before training).
        images: one (n, 28, 28, 1) float32 array per entry of `epochs`.

    Raises:
        ValueError: if `n` is not a positive integer.
    """

    def __init__(self, n=10, seed=0, path=None):
        super().__init__()
        self.n = int(check_int("n", n))
        self.seed = seed
        self.path = None if path is None else Path(path)
        self.codes = None
        self.digits = None
        self.epochs = []
        self.images = []

    def on_train_begin(self, logs=None):
        if self.codes is None:
            self.codes = self.model.prior_codes(self.n, self.seed)
            self.digits = self.model.prior_labels(self.n)  # a conditional model: 0, 1, ..., 9, 0, ...
        optimizer = getattr(self.model, "optimizer", None)
        untrained = optimizer is None or int(ops.convert_to_numpy(optimizer.iterations)) == 0
        if untrained and 0 not in self.epochs:
            self._record(0)

    def on_epoch_end(self, epoch, logs=None):
        self._record(epoch + 1)
        if self.path is not None:
            self.save_strip(self.path)

    def strip(self, epochs=None):
        """The kept images as one array: one row per epoch, one column per code.

        Args:
            epochs: the epochs to include (each must have been recorded);
                None: all, in the order recorded.

        Returns:
            A float32 array of shape (28 * rows, 28 * n), values in [0, 1].

        Raises:
            ValueError: if nothing was recorded yet, or an epoch was not.
        """
        rows = self._rows(epochs)
        return plotting.tile_images(np.concatenate([self.images[row] for row in rows]), columns=self.n)

    def save_strip(self, path, epochs=None):
        """Writes `strip(epochs)` as a grey PNG, one image pixel per file pixel.

        Args:
            path: the PNG file; parent folders are created.
            epochs: as for `strip`.

        Returns:
            The path written, a `pathlib.Path`.
        """
        return plotting.save_image(self.strip(epochs), path)

    def plot(self, epochs=None, path=None):
        """A figure of the strip with each row labelled by its epoch.

        Args:
            epochs: the epochs to show; None: all recorded. With 50 epochs,
                a selection such as `[0, 1, 2, 3, 5, 10, 20, 50]` reads better.
            path: where to save the figure; None: not saved.

        Returns:
            The `matplotlib.figure.Figure`, one axis whose y ticks name the
            epochs.

        Raises:
            ValueError: if nothing was recorded yet, or an epoch was not.
        """
        rows = self._rows(epochs)
        tile = self.strip(epochs)
        width = min(1.0 + 0.6 * self.n, 12.0)
        height = width * tile.shape[0] / tile.shape[1] + 0.6
        figure = matplotlib.figure.Figure(figsize=(width, height), layout="constrained")
        axis = figure.subplots()
        axis.imshow(tile, **plotting.IMAGE_STYLE)
        axis.set_yticks(14 + 28 * np.arange(len(rows)), labels=[str(self.epochs[row]) for row in rows])
        axis.set_xticks([])
        axis.set(ylabel="epoch", title=f"The same {self.n} codes decoded after each epoch")
        plotting.save_figure(figure, path)
        return figure

    def _record(self, epoch):
        """Decodes the codes with the current weights and keeps the images as `epoch`'s."""
        self.epochs.append(epoch)
        self.images.append(np.asarray(ops.convert_to_numpy(self.model.decode(self.codes, self.digits)), dtype="float32"))

    def _rows(self, epochs):
        """The indices into `self.images` of the requested epochs."""
        if not self.images:
            raise ValueError("No images recorded yet: the callback records them during fit")
        if epochs is None:
            return list(range(len(self.epochs)))
        missing = [epoch for epoch in epochs if epoch not in self.epochs]
        if missing:
            raise ValueError(f"Epoch(s) {missing} were not recorded; recorded: {self.epochs}")
        return [self.epochs.index(epoch) for epoch in epochs]
