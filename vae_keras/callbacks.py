"""The callbacks of a training run: the reference's per-epoch protocol, crash-safe checkpoints, decoded samples."""

import math
import time
from pathlib import Path

import keras
import matplotlib.figure
import numpy as np
from keras import ops

from vae_keras import plotting, records
from vae_keras.checks import check_int


class TrainingMonitor(keras.callbacks.Callback):
    """The reference protocol per epoch: noise stream, timing without the test pass, its line, the model saved.

    Each epoch's sampling noise is a stream of the seed and the epoch, so a
    resumed run repeats an uninterrupted one. A NaN loss stops training and
    keeps the last good model.

    Args:
        batches: the `EpochBatches` being trained on, or None.
        seed: the run's seed.
        model_path: where to save the model after each epoch, or None.
        verbose: print the per-epoch line.
    """

    def __init__(self, batches=None, seed=0, model_path=None, verbose=True):
        super().__init__()
        self.batches = batches
        self.seed = seed
        self.model_path = model_path
        self.verbose = verbose
        self.nan_at = None
        self._epoch = 0
        self._epoch_start = None
        self._last_batch_end = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.batches is not None and self._epoch_start is None:
            self.batches.first_epoch = epoch  # a resumed run starts after epoch 0
        sampling = getattr(self.model, "sampling", None)
        if sampling is not None:
            sampling.reseed(self.seed, stream=epoch)
        if hasattr(self.model, "start_epoch"):
            self.model.start_epoch(epoch)
        self._epoch = epoch
        self._epoch_start = time.perf_counter()
        self._last_batch_end = None

    def on_train_batch_end(self, batch, logs=None):
        self._last_batch_end = time.perf_counter()
        loss = (logs or {}).get("elbo")
        if loss is not None and not math.isfinite(float(loss)):
            self.nan_at = (self._epoch, batch)
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        end = self._last_batch_end or time.perf_counter()
        logs["epoch_seconds"] = end - self._epoch_start
        if self.nan_at is not None:
            return
        test_elbo = logs.get("val_elbo")
        if self.verbose and test_elbo is not None:
            print(
                f"Epoch : {epoch + 1} Test ELBO loss = {float(test_elbo):.4f}. "
                f"Time taken for epoch = {logs['epoch_seconds']:.4f}s",
                flush=True,
            )
        if self.model_path is not None:
            records.save_model(self.model, self.model_path)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves each finished epoch as one verified checkpoint folder, all there or not there (docs/crash-safety.md).

    Args:
        output_dir: the run folder.
        identity: the run's `records.run_identity`, recorded in every checkpoint.
        monitor: the run's `TrainingMonitor` (no checkpoint after a NaN loss).
        resume: the `records.Checkpoint` to load when training begins, or None.
        steps_per_epoch: batches per epoch, to check the loaded optimizer's step count.
    """

    def __init__(self, output_dir, identity, monitor, resume=None, steps_per_epoch=None):
        super().__init__()
        self.output_dir = Path(output_dir)
        self.identity = identity
        self.monitor = monitor
        self.resume = resume
        self.rows = list(resume.history) if resume is not None else []
        self.steps_per_epoch = steps_per_epoch

    def on_train_begin(self, logs=None):
        if self.resume is not None:
            restore(self.model, self.resume, self.steps_per_epoch, self.output_dir / records.MODEL_FILE)

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor.nan_at is not None:
            return
        row = {"epoch": epoch}
        row.update({name: float(value) for name, value in sorted((logs or {}).items())})
        self.rows.append(row)
        records.write_checkpoint(self.model, self.output_dir, epoch + 1, self.rows, self.identity)
        records.write_history(self.output_dir / records.HISTORY_FILE, self.rows)


def restore(model, checkpoint, steps_per_epoch=None, model_path=None):
    """Loads a verified `records.Checkpoint` into a compiled model: weights, Adam's moments and step count.

    A missing `model_path` (the run's `vae.keras`) is rebuilt from it, as the history is.

    Raises:
        ValueError: the state file cannot be loaded, or holds another number of steps.
    """
    optimizer = model.optimizer
    if not optimizer.built:
        # Adam's moments exist only once built; unbuilt, Keras would skip
        # loading them with a warning and resume with a fresh Adam.
        optimizer.build(model.trainable_variables)
    try:
        model.load_weights(checkpoint.state)
    except Exception as error:  # h5py and Keras raise many types for a damaged file
        raise ValueError(
            f"{checkpoint.state} could not be loaded ({type(error).__name__}: {error}). "
            f"Choose another output folder, or {records.START_AFRESH}"
        ) from None
    steps = int(ops.convert_to_numpy(optimizer.iterations))
    if steps_per_epoch and steps != checkpoint.epoch * steps_per_epoch:
        raise ValueError(
            f"{checkpoint.state} holds an optimizer after {steps} steps, not the "
            f"{checkpoint.epoch * steps_per_epoch} of its {checkpoint.epoch} epochs; it does not "
            f"belong to this run. Choose another output folder, or {records.START_AFRESH}"
        )
    if model_path is not None and not Path(model_path).is_file():
        records.save_model(model, model_path)
        print(f"Rebuilt {model_path} from the checkpoint of epoch {checkpoint.epoch}.")


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
