"""Training with the reference protocol: device choice, per-epoch test ELBO, checkpoints, resume."""

import contextlib
import csv
import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path

import keras
import numpy as np
from keras import ops

from vae_keras import backends
from vae_keras.config import EXECUTION_ENVIRONMENTS, VAEConfig
from vae_keras.data import load_mnist
from vae_keras.models import VAE, save_model_atomically

HISTORY_FILE = "history.csv"
MODEL_FILE = "vae.keras"
CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
# Folder of the last finished epoch's checkpoint (and, in older runs, Keras' backup).
CHECKPOINT_DIR = "checkpoint"
LEGACY_BACKUP_DIR = "backup"

# The reference's published test ELBO loss per epoch (MATLAB, GPU), epochs 1..50.
REFERENCE_TEST_ELBO = (
    28.0145, 24.8995, 23.2756, 21.151, 20.5335, 20.232, 19.9988, 19.8955, 19.7991, 19.6773,
    19.5181, 19.4532, 19.3771, 19.2893, 19.1641, 19.2175, 19.158, 19.085, 19.1169, 19.0791,
    19.0395, 18.9556, 18.9469, 18.924, 18.9124, 18.9595, 18.9256, 18.8708, 18.8602, 18.8563,
    18.8127, 18.7989, 18.8, 18.8095, 18.7601, 18.7469, 18.7049, 18.7084, 18.6858, 18.7284,
    18.6574, 18.6388, 18.7133, 18.6846, 18.6001, 18.5897, 18.6184, 18.6389, 18.5918, 18.5081,
)  # fmt: skip


def select_device(execution_environment="auto", verbose=True):
    """Chooses where to train, as the reference's `executionEnvironment` does.

    The same on every Keras backend; each backend is asked for its own GPUs
    (`tf.config`, `jax.devices()`, `torch.cuda`).

    Args:
        execution_environment: "auto" (a GPU when the backend sees one, else
            the CPU), "cpu" (the CPU even where a GPU exists) or "gpu".
        verbose: print the backend and the choice.

    Returns:
        A device name for `keras.device`: "gpu:0" or "cpu:0".

    Raises:
        ValueError: for an unknown environment.
        RuntimeError: for "gpu" when the backend sees no GPU.
    """
    if execution_environment not in EXECUTION_ENVIRONMENTS:
        raise ValueError(
            f"execution_environment must be one of {EXECUTION_ENVIRONMENTS}, "
            f"received execution_environment={execution_environment!r}"
        )
    gpus = [] if execution_environment == "cpu" else backends.visible_gpus()
    if execution_environment == "gpu" and not gpus:
        raise RuntimeError(
            f"execution_environment='gpu' but Keras' {backends.BACKEND} backend sees no GPU. "
            f"Install a GPU build ({backends.gpu_install_hint()}) on a machine with an "
            "NVIDIA GPU, or use execution_environment='auto' or 'cpu'."
        )
    device = "gpu:0" if gpus else "cpu:0"
    if verbose:
        where = f"the GPU ({gpus[0]})" if gpus else "the CPU"
        print(
            f"Keras backend {backends.BACKEND!r}, execution environment "
            f"{execution_environment!r}: training on {where}, device {device!r}."
        )
    return device


def make_optimizer(config):
    """Adam with the reference's settings (MATLAB `adamupdate` defaults)."""
    return keras.optimizers.Adam(
        learning_rate=config.learning_rate, beta_1=0.9, beta_2=0.999, epsilon=config.adam_epsilon
    )


def resolve_jit_compile(config, device):
    """Whether the train step is compiled (XLA on TensorFlow, `jax.jit`, `torch.compile`).

    "auto" follows measurements (README, "Backends"): TensorFlow uses XLA on a
    GPU only (on this project's CPU it ran 2x slower); JAX always compiles (its
    eager mode runs op by op); PyTorch runs eagerly (`torch.compile` made the
    reference protocol slower on an H200: 52 s against 26 s).
    """
    if config.jit_compile != "auto":
        return bool(config.jit_compile)
    if backends.BACKEND == "jax":
        return True
    return backends.BACKEND == "tensorflow" and device.startswith("gpu")


def resolve_steps_per_execution(config, device, steps_per_epoch):
    """Train steps per compiled call: "auto" runs a whole epoch per call with JAX on a GPU.

    There a step takes under 2 ms and Python's round trip between steps
    matters (0.184 s against 0.19-0.23 s per epoch on an H200); on the CPU a
    step takes 0.2 s and 5 steps per call measured no faster (1.02x), so 1.
    """
    if config.steps_per_execution != "auto":
        return config.steps_per_execution
    if backends.BACKEND == "jax" and device.startswith("gpu"):
        return steps_per_epoch
    return 1


def make_distribution(config, device):
    """Keras' `DataParallel` over every device of the chosen kind, or None for one device.

    "auto" splits each batch across devices where JAX sees several (several
    GPUs, or CPUs made with `XLA_FLAGS=--xla_force_host_platform_device_count=N`);
    True insists on it; False trains on one device.

    Raises:
        ValueError: for `data_parallel=True` on a backend other than JAX or
            with one device, or a batch size the devices cannot share evenly.
    """
    kind = device.split(":")[0]
    count = backends.devices_of_kind(kind)
    wanted = config.data_parallel
    if wanted is False or (wanted == "auto" and (backends.BACKEND != "jax" or count < 2)):
        return None
    if backends.BACKEND != "jax" or count < 2:
        raise ValueError(
            f"data_parallel=True needs the JAX backend and several devices; the "
            f"{backends.BACKEND} backend sees {count} {kind.upper()} device(s)"
        )
    for name in ("batch_size", "eval_batch_size"):
        if getattr(config, name) % count:
            raise ValueError(
                f"{name} must be a multiple of the {count} devices that share each batch, "
                f"received {name}={getattr(config, name)!r}"
            )
    return keras.distribution.DataParallel(devices=keras.distribution.list_devices(kind))


def build_model(config, device="cpu:0", steps_per_epoch=None):
    """A new `VAE` compiled with the configuration's optimizer and step settings.

    Args:
        config: a `VAEConfig`.
        device: the device it will train on (decides the "auto" settings).
        steps_per_epoch: batches per epoch, for `steps_per_execution="auto"`;
            None: `config.steps_per_epoch()`.

    Returns:
        A compiled `VAE`.
    """
    if steps_per_epoch is None:
        steps_per_epoch = config.steps_per_epoch()
    model = VAE(latent_dim=config.latent_dim, seed=config.seed, precision=config.precision)
    model.compile(
        optimizer=make_optimizer(config),
        jit_compile=resolve_jit_compile(config, device),
        steps_per_execution=resolve_steps_per_execution(config, device, steps_per_epoch),
    )
    return model


class EpochBatches(keras.utils.PyDataset):
    """The training images as NumPy mini-batches, for every backend.

    Like the reference, an epoch is floor(N / batch_size) full batches, taken
    in order, and the remainder is left out. With `shuffle=True` the order of
    epoch `e` is a permutation drawn from the seed and `e` alone, so a resumed
    run sees the same batches as an uninterrupted one.

    The dataset is one long sequence over all remaining epochs (`fit` gets
    `steps_per_epoch=steps`): batch `i` belongs to epoch `first_epoch +
    i // steps`. Its order is thus fixed by its index, whatever Keras
    prefetches ahead (TensorFlow reads the next epoch's first batches before
    the epoch begins).

    Args:
        x: images, shape (N, 28, 28, 1).
        batch_size: images per batch.
        epochs: the run's number of epochs.
        shuffle: reshuffle before each epoch.
        seed: seed of the permutations.

    Attributes:
        steps: batches per epoch.
        first_epoch: the epoch (0-based) batch 0 belongs to: 0, or where a
            resumed run starts; set before training starts.
    """

    def __init__(self, x, batch_size, epochs, shuffle=False, seed=0):
        super().__init__()
        if batch_size > len(x):
            raise ValueError(f"batch_size={batch_size} is larger than the {len(x)} training images")
        self.x = x
        self.batch_size = batch_size
        self.epochs = epochs
        self.shuffle = shuffle
        self.seed = seed
        self.steps = len(x) // batch_size
        self.first_epoch = 0
        self._orders = {}

    def __len__(self):
        return self.steps * self.epochs

    def __getitem__(self, index):
        epoch, step = divmod(index, self.steps)
        start = step * self.batch_size
        if not self.shuffle:
            return (self.x[start : start + self.batch_size],)
        order = self.order(self.first_epoch + epoch)
        return (self.x[order[start : start + self.batch_size]],)

    def order(self, epoch):
        """The permutation of the training images in epoch `epoch` (0-based)."""
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.x))}
        return self._orders[epoch]


class TrainingMonitor(keras.callbacks.Callback):
    """Per-epoch bookkeeping of the reference protocol.

    At the start of the first epoch it tells `EpochBatches` where the run
    starts, and at the start of each epoch it resets the sampling noise to a
    stream derived from the seed and the epoch (so that a resumed run repeats
    an uninterrupted one). At the end it records the
    epoch's training time (without the test evaluation, as the reference's
    `toc`), prints the reference's line, and saves the model, unless the loss
    has become NaN, in which case training stops and the last good model stays.

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
            # SeedGenerator state is [seed, counter]; each epoch gets its own counter range.
            sampling.seed_generator.state.assign(np.array([self.seed, epoch << 20], dtype="uint32"))
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
            save_model_atomically(self.model, self.model_path)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves each finished epoch as one unit that is either all there or not there.

    Keras' `BackupAndRestore` writes its weights and then its metadata in
    place, so a kill in between leaves a checkpoint that cannot be resumed or,
    worse, resumes wrongly. Here an epoch's checkpoint is a folder,
    `checkpoint/epoch-NNNN/`, holding the model's and the optimizer's state
    (`state.weights.h5`) and `meta.json` (the epoch, every history row so far,
    and `finished` on the last epoch). It is written under a temporary name,
    each file flushed to disk, then renamed into place in one step, the way
    Orbax and PyTorch Lightning save checkpoints; the previous one is removed
    only afterwards. `history.csv` is rewritten from the checkpoint's rows
    each epoch, so it never holds a duplicated, missing or half-written row.
    The data order and the sampling noise of an epoch follow from its number
    (see `EpochBatches`, `TrainingMonitor`), so the epoch number is all the
    data state a resume needs.

    Args:
        output_dir: the run folder.
        epochs: the run's number of epochs (the last one is marked finished).
        monitor: the run's `TrainingMonitor` (no checkpoint after a NaN loss).
        resume_from: the checkpoint folder to load at the start, or None.
        history: the rows of the epochs already finished (from `resume_from`).
        steps_per_epoch: batches per epoch, to check the loaded optimizer's
            step count against.
    """

    def __init__(self, output_dir, epochs, monitor, resume_from=None, history=(), steps_per_epoch=None):
        super().__init__()
        self.expected_steps = len(history) * steps_per_epoch if steps_per_epoch else None
        self.output_dir = Path(output_dir)
        self.epochs = epochs
        self.monitor = monitor
        self.resume_from = resume_from
        self.rows = list(history)

    def on_train_begin(self, logs=None):
        if self.resume_from is None:
            return
        optimizer = self.model.optimizer
        if not optimizer.built:
            # Adam's moments exist only once built; unbuilt, Keras would skip
            # loading them with a warning and resume with a fresh Adam.
            optimizer.build(self.model.trainable_variables)
        state = self.resume_from / CHECKPOINT_STATE
        try:
            self.model.load_weights(state)
        except Exception as error:  # h5py and Keras raise many types for a damaged file
            raise ValueError(
                f"{state} could not be loaded ({type(error).__name__}: {error}); it was changed "
                "since it was written. Pass overwrite=True (--overwrite) to start afresh."
            ) from None
        steps = int(ops.convert_to_numpy(optimizer.iterations))
        if self.expected_steps is not None and steps != self.expected_steps:
            raise ValueError(
                f"{self.resume_from / CHECKPOINT_STATE} holds an optimizer after {steps} steps, "
                f"not the {self.expected_steps} of its {len(self.rows)} epochs; it does not "
                "belong to this run. Pass overwrite=True (--overwrite) to start afresh."
            )

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor.nan_at is not None:
            return
        row = {"epoch": epoch}
        row.update({name: float(value) for name, value in sorted((logs or {}).items())})
        self.rows.append(row)
        meta = {"epoch": epoch + 1, "finished": epoch + 1 >= self.epochs, "history": self.rows}
        write_checkpoint(self.model, self.output_dir, meta)
        write_history(self.output_dir / HISTORY_FILE, self.rows)


CHECKPOINT_STATE = "state.weights.h5"
CHECKPOINT_META = "meta.json"


def write_checkpoint(model, output_dir, meta):
    """Writes `checkpoint/epoch-NNNN/` whole, under a temporary name first, then drops older ones."""
    root = Path(output_dir) / CHECKPOINT_DIR
    root.mkdir(exist_ok=True)
    final = root / f"epoch-{meta['epoch']:04d}"
    partial = root / f".partial-{meta['epoch']:04d}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    model.save_weights(partial / CHECKPOINT_STATE)
    _fsync_file(partial / CHECKPOINT_STATE)
    _write_synced(partial / CHECKPOINT_META, json.dumps(meta, indent=1).encode())
    _fsync_file(partial)
    shutil.rmtree(final, ignore_errors=True)  # only a rerun of the same epoch has one
    os.rename(partial, final)
    _fsync_file(root)
    for old in root.iterdir():
        if old != final:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(output_dir):
    """The newest complete checkpoint of a run: `(folder, meta)`, or None.

    Raises:
        ValueError: when the newest checkpoint folder is not a readable
            checkpoint (the message names the file).
    """
    root = Path(output_dir) / CHECKPOINT_DIR
    folders = sorted(root.glob("epoch-[0-9][0-9][0-9][0-9]")) if root.is_dir() else []
    if not folders:
        return None
    folder = folders[-1]
    meta_path = folder / CHECKPOINT_META
    try:
        meta = json.loads(meta_path.read_text())
        valid = (
            isinstance(meta, dict)
            and isinstance(meta.get("epoch"), int)
            and isinstance(meta.get("history"), list)
            and len(meta["history"]) == meta["epoch"]
            and (folder / CHECKPOINT_STATE).is_file()
        )
    except (OSError, ValueError) as error:
        valid, meta = False, str(error)
    if not valid:
        raise ValueError(
            f"{meta_path} is not a readable checkpoint ({meta if isinstance(meta, str) else 'unexpected content'}); "
            "it was not written by vae_keras or was changed since. Pass overwrite=True "
            "(--overwrite) to start the run afresh, or restore the folder."
        )
    return folder, meta


def write_history(path, rows):
    """Writes the per-epoch rows as `history.csv` (as Keras' CSVLogger lays it out), atomically."""
    columns = ["epoch", *sorted({name for row in rows for name in row} - {"epoch"})]
    lines = [",".join(columns)]
    lines += [",".join(str(row.get(name, "")) for name in columns) for row in rows]
    _write_synced(path, ("\n".join(lines) + "\n").encode(), atomic=True)


def _write_synced(path, data, atomic=False):
    """Writes `data` to `path` and flushes it to disk; `atomic`: through a temporary file and a rename."""
    path = Path(path)
    target = path.with_name(f".{path.name}.partial") if atomic else path
    with open(target, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    if atomic:
        os.replace(target, path)


def _fsync_file(path):
    """Flushes a file's or a folder's entry to disk (no-op where a folder cannot be opened)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


class TrainingDiverged(FloatingPointError):
    """Raised when the training loss becomes NaN or infinite."""


@dataclasses.dataclass
class TrainingResult:
    """What `train` returns.

    Attributes:
        model: the trained `VAE`.
        history: per-epoch figures read back from the run's CSV, one list per
            column (`epoch` 1-based, `elbo`, `val_elbo` = test ELBO...), the
            epochs of earlier, interrupted sessions included.
        output_dir: the folder holding `vae.keras`, `history.csv`, `config.json`.
        device: the device trained on.
    """

    model: VAE
    history: dict
    output_dir: Path
    device: str


def train(config=None, output_dir="runs/vae", data=None, verbose=1, overwrite=False, callbacks=()):
    """Trains a VAE with the reference protocol and reports the test ELBO each epoch.

    The run writes into `output_dir`: `config.json`, `history.csv` (one row
    per epoch), `vae.keras` (the model after the last finished epoch),
    `checkpoint/` (the last finished epoch's model and optimizer state,
    written whole or not at all, see `EpochCheckpoint`) and `.lock` (one
    training per folder at a time). If a run in the same folder was
    interrupted, at any moment, calling `train` again with the same
    configuration resumes after its last finished epoch, to the result of an
    uninterrupted run.

    Args:
        config: a `VAEConfig`; the reference settings when None.
        output_dir: folder of the run.
        data: `((x_train, y_train), (x_test, y_test))` as `load_mnist` returns;
            read from the project's `data/` folder when None.
        verbose: 0 silent, 1 progress bar and the reference's line per epoch,
            2 one Keras line per epoch and the reference's line.
        overwrite: start afresh even where `output_dir` holds a finished run.
        callbacks: further Keras callbacks.

    Returns:
        A `TrainingResult`.

    Raises:
        FileExistsError: when `output_dir` holds a finished run (or a run made
            with another configuration) and `overwrite` is False.
        TrainingDiverged: when the loss becomes NaN; the model of the last
            good epoch stays in `output_dir`.
        RuntimeError: for execution_environment "gpu" without a GPU, or when
            another training holds `output_dir`.
        ValueError: when the folder's checkpoint or `config.json` is damaged
            (the message names the file; nothing is overwritten).
    """
    config = config if config is not None else VAEConfig()
    if not isinstance(config, VAEConfig):
        raise TypeError(f"config must be a VAEConfig, received {type(config).__name__}")
    output_dir = Path(output_dir)
    device = select_device(config.execution_environment, verbose=bool(verbose))
    output_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(output_dir):
        return _train(config, output_dir, device, data, verbose, overwrite, callbacks)


def _train(config, output_dir, device, data, verbose, overwrite, callbacks):
    """`train` once the run folder is this process's alone."""
    latest = _prepare_output_dir(output_dir, config, overwrite, verbose)

    backends.set_random_seed(config.seed)
    if not resolve_jit_compile(config, device):
        # Keras turns XLA off where op determinism is on, so only without XLA.
        backends.enable_determinism(device)
    (x_train, _), (x_test, _) = data if data is not None else load_mnist()
    if config.train_size is not None:
        x_train = x_train[: config.train_size]
    if config.test_size is not None:
        x_test = x_test[: config.test_size]
    if config.batch_size > len(x_train):
        raise ValueError(
            f"batch_size={config.batch_size} is larger than the {len(x_train)} training images"
        )
    batches = EpochBatches(
        x_train, config.batch_size, config.epochs, shuffle=config.shuffle, seed=config.seed
    )
    distribution = make_distribution(config, device)

    monitor = TrainingMonitor(batches, config.seed, output_dir / MODEL_FILE, verbose=bool(verbose))
    resume_from, history_rows = (latest[0], latest[1]["history"]) if latest else (None, [])
    if resume_from is not None:
        # The history is the checkpoint's, whatever a kill left in history.csv.
        write_history(output_dir / HISTORY_FILE, history_rows)
    with backends.device_scope(device), (distribution.scope() if distribution else contextlib.nullcontext()):
        model = build_model(config, device, batches.steps)
        if verbose:
            print(
                f"Compiled: jit_compile={model.jit_compile}, steps_per_execution="
                f"{model.steps_per_execution}"
                + (f", data parallel over {len(distribution.device_mesh.devices.flat)} devices" if distribution else "")
                + "."
            )
        all_callbacks = [
            # The progress bar first, so that its epoch line is finished before
            # the reference's line is printed below it.
            keras.callbacks.ProgbarLogger(),
            monitor,
            EpochCheckpoint(output_dir, config.epochs, monitor, resume_from, history_rows, batches.steps),
            *callbacks,
        ]
        if resume_from is not None and verbose:
            print(f"Resuming the interrupted run in {output_dir} after its epoch {len(history_rows)}.")
        start = time.perf_counter()
        model.fit(
            batches,
            shuffle=False,  # EpochBatches orders the images itself
            steps_per_epoch=batches.steps,
            initial_epoch=len(history_rows),
            epochs=config.epochs,
            validation_data=x_test,
            validation_batch_size=config.eval_batch_size,
            callbacks=all_callbacks,
            verbose=verbose,
        )
    seconds = time.perf_counter() - start
    if verbose:
        print(f"Training took {seconds:.1f} s (compilation, {config.epochs} epochs' training and test evaluations).")
    history = read_history(output_dir / HISTORY_FILE) if (output_dir / HISTORY_FILE).is_file() else {"epoch": []}
    if monitor.nan_at is not None:
        epoch, batch = monitor.nan_at
        kept = (
            f"The model of the last finished epoch is in {output_dir / MODEL_FILE}"
            if (output_dir / MODEL_FILE).is_file()
            else "No epoch finished, so no model was saved"
        )
        raise TrainingDiverged(
            f"Training stopped: the loss became NaN or infinite at epoch {epoch + 1}, "
            f"batch {batch + 1} (learning_rate={config.learning_rate}). {kept}; try a lower "
            "learning rate."
        )
    return TrainingResult(model=model, history=history, output_dir=output_dir, device=device)


def evaluate(model, x, batch_size=2_000, verbose=0):
    """The test ELBO of a model on images `x`, with z sampled as in the reference.

    Args:
        model: a `VAE`.
        x: images, shape (N, 28, 28, 1), values in [0, 1].
        batch_size: images per evaluation batch (speed only).
        verbose: Keras verbosity.

    Returns:
        A dict of floats: `elbo`, `reconstruction_loss`, `kl_loss`.
    """
    if not model.compiled:
        model.compile(optimizer=keras.optimizers.Adam())
    results = model.evaluate(x, batch_size=batch_size, verbose=verbose, return_dict=True)
    return {name: float(results[name]) for name in ("elbo", "reconstruction_loss", "kl_loss")}


def read_history(path):
    """Reads a run's `history.csv` into a dict of columns, `epoch` counted from 1.

    Args:
        path: the CSV file.

    Returns:
        A dict mapping each column name to a list of floats (ints for `epoch`).

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the file is not a training history.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No training history at {path}")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "epoch" not in rows[0]:
        raise ValueError(f"{path} is not a training history: it has no 'epoch' column")
    columns = {name: [] for name in (rows[0] if rows else ["epoch"])}
    for row in rows:
        for name in columns:
            value = row.get(name, "")
            if name == "epoch":
                columns[name].append(int(value) + 1)
            else:
                columns[name].append(float(value) if value not in ("", None) else float("nan"))
    return columns


def _finished(output_dir, epochs):
    """Whether the run's own record says it finished: its model, and a history row for each of its `epochs`."""
    if not (output_dir / MODEL_FILE).is_file():
        return False
    try:
        return len(read_history(output_dir / HISTORY_FILE)["epoch"]) >= epochs
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _exclusive(output_dir):
    """Holds an exclusive lock on the run folder; the system drops it if the process dies."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks, no check
        yield
        return
    path = output_dir / LOCK_FILE
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RuntimeError(
                f"{output_dir} is in use by another training ({holder}); wait for it to end, "
                "or choose another output folder."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def _prepare_output_dir(output_dir, config, overwrite, verbose=True):
    """Checks the run folder against `config`; returns its latest checkpoint `(folder, meta)` or None."""
    config_path = output_dir / CONFIG_FILE
    config_json = dataclasses.asdict(config)
    if overwrite:
        for name in (HISTORY_FILE, MODEL_FILE, CONFIG_FILE):
            (output_dir / name).unlink(missing_ok=True)
        for name in (CHECKPOINT_DIR, LEGACY_BACKUP_DIR):
            shutil.rmtree(output_dir / name, ignore_errors=True)
    if (output_dir / LEGACY_BACKUP_DIR).exists():
        raise FileExistsError(
            f"{output_dir} holds an interrupted run of an older vae_keras (its "
            f"{LEGACY_BACKUP_DIR}/ folder), which this version cannot resume; finish it with "
            "that version, or pass overwrite=True (--overwrite) to start afresh."
        )
    latest = latest_checkpoint(output_dir)  # a damaged checkpoint is an error naming its file
    saved = _saved_config(config_path) if config_path.exists() else None
    if latest is not None:
        if latest[1]["epoch"] > config.epochs:
            raise ValueError(
                f"{latest[0] / CHECKPOINT_META} records epoch {latest[1]['epoch']}, past this run's "
                f"{config.epochs} epochs; it belongs to another run. Choose another output folder, "
                "or pass overwrite=True (--overwrite) to start afresh."
            )
        if latest[1].get("finished"):
            raise FileExistsError(
                f"{output_dir} already holds a finished run ({output_dir / MODEL_FILE}); "
                "choose another output folder or pass overwrite=True (--overwrite on the "
                "command line) to replace it."
            )
        if saved is not None:
            # A field the saved run predates counts as holding its default.
            defaults = dataclasses.asdict(VAEConfig())
            differing = sorted(k for k in config_json if saved.get(k, defaults[k]) != config_json[k])
            if differing:
                raise FileExistsError(
                    f"{output_dir} holds an interrupted run with another configuration "
                    f"(differs in {', '.join(differing)}); resume it with the same "
                    "settings, choose another output folder, or pass overwrite=True "
                    "(--overwrite on the command line)."
                )
    elif saved is not None and _finished(output_dir, saved["epochs"] if isinstance(saved.get("epochs"), int) else config.epochs):
        # A run made before checkpoints recorded `finished`.
        raise FileExistsError(
            f"{output_dir} already holds a finished run ({output_dir / MODEL_FILE}); "
            "choose another output folder or pass overwrite=True (--overwrite on the "
            "command line) to replace it."
        )
    elif verbose and saved is not None:
        print(
            f"{output_dir} holds an unfinished run with no finished epoch to resume from "
            "(stopped in its first epoch, or by a NaN loss): training starts again from epoch 1."
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    _write_synced(config_path, (json.dumps(config_json, indent=2) + "\n").encode(), atomic=True)
    return latest


def _saved_config(config_path):
    """The configuration a run folder holds, as a dict; a clear error for anything else."""
    try:
        saved = json.loads(config_path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{config_path} is not valid JSON ({error}); it is not a run's configuration. "
            "Choose another output folder, or pass overwrite=True (--overwrite) to start afresh."
        ) from None
    if not isinstance(saved, dict):
        raise ValueError(
            f"{config_path} holds a JSON {type(saved).__name__}, not a run's configuration. "
            "Choose another output folder, or pass overwrite=True (--overwrite) to start afresh."
        )
    return saved

