"""A callback that decodes the same codes after every epoch, to watch the decoder learn."""

from pathlib import Path

import keras
import matplotlib.figure
import matplotlib.image
import numpy as np
from keras import ops

from vae_keras.checks import check_int
from vae_keras.plotting import DPI, tile_images


class DecodedSamples(keras.callbacks.Callback):
    """Decodes a fixed set of codes, drawn once from N(0, I), after every epoch.

    The codes are drawn from `seed` when training begins (the model's
    `latent_dim` gives their size) and stay the same for the whole run, so the
    rows of `strip()` differ only by what the decoder learned. When training
    starts from an untrained model (the optimizer has taken no step yet), the
    untrained decoder's images are kept too, as epoch 0.

    Args:
        n: number of codes, a positive integer.
        seed: seed of the codes (NumPy).
        path: a PNG file that the strip is written to after every epoch (so
            it can be watched during a long run); parent folders are created.
            None: not written.

    Attributes:
        codes: the (n, latent_dim) float32 codes, once training has begun.
        epochs: the epoch after which each row was decoded (1 = after the
            first epoch; 0 = before training).
        images: one (n, 28, 28, 1) float32 array per entry of `epochs`.

    Raises:
        ValueError: if `n` is not a positive integer.

    Example:

    >>> watcher = DecodedSamples(n=10, seed=0)
    >>> model.fit(x_train, epochs=2, callbacks=[watcher])  # doctest: +SKIP
    >>> watcher.epochs  # doctest: +SKIP
    [0, 1, 2]
    >>> watcher.plot()  # doctest: +SKIP
    """

    def __init__(self, n=10, seed=0, path=None):
        super().__init__()
        self.n = int(check_int("n", n))
        self.seed = seed
        self.path = None if path is None else Path(path)
        self.codes = None
        self.epochs = []
        self.images = []

    def on_train_begin(self, logs=None):
        if self.codes is None:
            self.codes = self.model.prior_codes(self.n, self.seed)
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
        return tile_images(np.concatenate([self.images[row] for row in rows]), columns=self.n)

    def save_strip(self, path, epochs=None):
        """Writes `strip(epochs)` as a grey PNG, one image pixel per file pixel.

        Args:
            path: the PNG file; parent folders are created.
            epochs: as for `strip`.

        Returns:
            The path written, a `pathlib.Path`.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        matplotlib.image.imsave(path, self.strip(epochs), cmap="gray", vmin=0.0, vmax=1.0)
        return path

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
        axis.imshow(tile, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        axis.set_yticks(14 + 28 * np.arange(len(rows)), labels=[str(self.epochs[row]) for row in rows])
        axis.set_xticks([])
        axis.set(ylabel="epoch", title=f"The same {self.n} codes decoded after each epoch")
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(path, dpi=DPI, bbox_inches="tight")
        return figure

    def _record(self, epoch):
        """Decodes the codes with the current weights and keeps the images as `epoch`'s."""
        self.epochs.append(epoch)
        self.images.append(np.asarray(ops.convert_to_numpy(self.model.decode(self.codes)), dtype="float32"))

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
