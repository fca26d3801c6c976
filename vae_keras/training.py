"""Training with the reference protocol: device choice, per-epoch test ELBO, checkpoints, resume."""

import csv
import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from vae_keras.config import VAEConfig
from vae_keras.data import load_mnist
from vae_keras.models import VAE

HISTORY_FILE = "history.csv"
MODEL_FILE = "vae.keras"
CONFIG_FILE = "config.json"
BACKUP_DIR = "backup"

# The reference's published test ELBO loss per epoch (MATLAB, GPU), epochs 1..50.
REFERENCE_TEST_ELBO = (
    28.0145, 24.8995, 23.2756, 21.151, 20.5335, 20.232, 19.9988, 19.8955, 19.7991, 19.6773,
    19.5181, 19.4532, 19.3771, 19.2893, 19.1641, 19.2175, 19.158, 19.085, 19.1169, 19.0791,
    19.0395, 18.9556, 18.9469, 18.924, 18.9124, 18.9595, 18.9256, 18.8708, 18.8602, 18.8563,
    18.8127, 18.7989, 18.8, 18.8095, 18.7601, 18.7469, 18.7049, 18.7084, 18.6858, 18.7284,
    18.6574, 18.6388, 18.7133, 18.6846, 18.6001, 18.5897, 18.6184, 18.6389, 18.5918, 18.5081,
)  # fmt: skip


def visible_gpus():
    """The GPUs TensorFlow can use, as a list of physical device names."""
    import tensorflow as tf

    return [device.name for device in tf.config.list_physical_devices("GPU")]


def select_device(execution_environment="auto", verbose=True):
    """Chooses where to train, as the reference's `executionEnvironment` does.

    Args:
        execution_environment: "auto" (a GPU when TensorFlow sees one, else the
            CPU), "cpu" (the CPU even where a GPU exists) or "gpu".
        verbose: print the choice.

    Returns:
        A device name for `keras.device`: "gpu:0" or "cpu:0".

    Raises:
        ValueError: for an unknown environment.
        RuntimeError: for "gpu" when TensorFlow sees no GPU.
    """
    if execution_environment not in ("auto", "cpu", "gpu"):
        raise ValueError(
            "execution_environment must be 'auto', 'cpu' or 'gpu', "
            f"received execution_environment={execution_environment!r}"
        )
    gpus = [] if execution_environment == "cpu" else visible_gpus()
    if execution_environment == "gpu" and not gpus:
        raise RuntimeError(
            "execution_environment='gpu' but TensorFlow sees no GPU. Install a CUDA "
            "build of TensorFlow (pip install 'tensorflow[and-cuda]') on a machine with "
            "an NVIDIA GPU, or use execution_environment='auto' or 'cpu'."
        )
    device = "gpu:0" if gpus else "cpu:0"
    if verbose:
        where = f"the GPU ({gpus[0]})" if gpus else "the CPU"
        print(f"Execution environment {execution_environment!r}: training on {where}, device {device!r}.")
    return device


def make_optimizer(config):
    """Adam with the reference's settings (MATLAB `adamupdate` defaults)."""
    return keras.optimizers.Adam(
        learning_rate=config.learning_rate, beta_1=0.9, beta_2=0.999, epsilon=config.adam_epsilon
    )


def resolve_jit_compile(config, device):
    """XLA or not: "auto" uses it on a GPU only (on the CPU it measured slower)."""
    if config.jit_compile == "auto":
        return device.startswith("gpu")
    return bool(config.jit_compile)


def build_model(config, device="cpu:0"):
    """A new `VAE` compiled with the configuration's optimizer and step settings.

    Args:
        config: a `VAEConfig`.
        device: the device it will train on (decides "auto" XLA compilation).

    Returns:
        A compiled `VAE`.
    """
    model = VAE(latent_dim=config.latent_dim, seed=config.seed, precision=config.precision)
    model.compile(
        optimizer=make_optimizer(config),
        jit_compile=resolve_jit_compile(config, device),
        steps_per_execution=config.steps_per_execution,
    )
    return model


class EpochBatches:
    """The training images as a `tf.data` pipeline of whole mini-batches.

    Like the reference, an epoch is floor(N / batch_size) full batches, taken
    in order, and the remainder is left out. With `shuffle=True` the order of
    epoch `e` is a permutation drawn from the seed and `e` alone, so a resumed
    run sees the same batches as an uninterrupted one. The order lives in a
    variable that the pipeline reads, so changing it costs no Python per batch.

    Args:
        x: images, shape (N, 28, 28, 1).
        batch_size: images per batch.
        shuffle: reshuffle before each epoch.
        seed: seed of the permutations.

    Attributes:
        dataset: the `tf.data.Dataset` to pass to `fit`.
        steps: batches per epoch.
    """

    def __init__(self, x, batch_size, shuffle=False, seed=0):
        import tensorflow as tf

        if batch_size > len(x):
            raise ValueError(f"batch_size={batch_size} is larger than the {len(x)} training images")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.steps = len(x) // batch_size
        self.size = len(x)
        with tf.device("cpu:0"):
            images = tf.constant(x)
            self.order = tf.Variable(tf.range(len(x)), trainable=False, name="epoch_order")
        order = self.order

        def batch(index):
            start = index * batch_size
            return tf.gather(images, order[start : start + batch_size])

        self.dataset = tf.data.Dataset.range(self.steps).map(batch)

    def set_epoch(self, epoch):
        """Selects the order of epoch `epoch` (0-based): in order, or a seeded permutation."""
        if self.shuffle:
            self.order.assign(np.random.default_rng([self.seed, epoch]).permutation(self.size))


class TrainingMonitor(keras.callbacks.Callback):
    """Per-epoch bookkeeping of the reference protocol.

    At the start of each epoch it selects the epoch's data order and resets the
    sampling noise to a stream derived from the seed and the epoch (so that a
    resumed run repeats an uninterrupted one). At the end it records the
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
        if self.batches is not None:
            self.batches.set_epoch(epoch)
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
            self.model.save(self.model_path)


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
    per epoch), `vae.keras` (the model after the last finished epoch) and,
    while it runs, `backup/` (model and optimizer state after each epoch).
    If a run in the same folder was interrupted, calling `train` again with
    the same configuration resumes after its last finished epoch.

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
        RuntimeError: for execution_environment "gpu" without a GPU.
    """
    config = config if config is not None else VAEConfig()
    if not isinstance(config, VAEConfig):
        raise TypeError(f"config must be a VAEConfig, received {type(config).__name__}")
    output_dir = Path(output_dir)
    device = select_device(config.execution_environment, verbose=bool(verbose))
    _prepare_output_dir(output_dir, config, overwrite)

    keras.utils.set_random_seed(config.seed)
    jit_compile = resolve_jit_compile(config, device)
    if not jit_compile:
        # Keras turns XLA off where op determinism is on, so only without XLA.
        _enable_determinism()
    (x_train, _), (x_test, _) = data if data is not None else load_mnist()
    if config.train_size is not None:
        x_train = x_train[: config.train_size]
    if config.test_size is not None:
        x_test = x_test[: config.test_size]
    if config.batch_size > len(x_train):
        raise ValueError(
            f"batch_size={config.batch_size} is larger than the {len(x_train)} training images"
        )
    batches = EpochBatches(x_train, config.batch_size, shuffle=config.shuffle, seed=config.seed)

    monitor = TrainingMonitor(batches, config.seed, output_dir / MODEL_FILE, verbose=bool(verbose))
    resumed = (output_dir / BACKUP_DIR).exists()
    with keras.device(device):
        model = build_model(config, device)
        all_callbacks = [
            monitor,
            keras.callbacks.BackupAndRestore(str(output_dir / BACKUP_DIR)),
            keras.callbacks.CSVLogger(str(output_dir / HISTORY_FILE), append=resumed),
            *callbacks,
        ]
        if resumed and verbose:
            print(f"Resuming the interrupted run in {output_dir} after its last finished epoch.")
        model.fit(
            batches.dataset,
            shuffle=False,  # EpochBatches orders the batches itself
            epochs=config.epochs,
            validation_data=x_test,
            validation_batch_size=config.eval_batch_size,
            callbacks=all_callbacks,
            verbose=verbose,
        )
    history = read_history(output_dir / HISTORY_FILE)
    if monitor.nan_at is not None:
        epoch, batch = monitor.nan_at
        raise TrainingDiverged(
            f"Training stopped: the loss became NaN or infinite at epoch {epoch + 1}, "
            f"batch {batch + 1} (learning_rate={config.learning_rate}). The model of the "
            f"last finished epoch is in {output_dir / MODEL_FILE}; try a lower learning rate."
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


def _prepare_output_dir(output_dir, config, overwrite):
    config_path = output_dir / CONFIG_FILE
    config_json = dataclasses.asdict(config)
    if output_dir.exists() and overwrite:
        for name in (HISTORY_FILE, MODEL_FILE, CONFIG_FILE):
            (output_dir / name).unlink(missing_ok=True)
        shutil.rmtree(output_dir / BACKUP_DIR, ignore_errors=True)
    if config_path.exists():
        saved = json.loads(config_path.read_text())
        if (output_dir / BACKUP_DIR).exists():
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
        elif (output_dir / HISTORY_FILE).exists():
            raise FileExistsError(
                f"{output_dir} already holds a finished run ({output_dir / MODEL_FILE}); "
                "choose another output folder or pass overwrite=True (--overwrite on the "
                "command line) to replace it."
            )
    output_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(config_json, indent=2) + "\n")


def _enable_determinism():
    """Makes TensorFlow's CPU kernels repeatable (same seed, same losses)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()

