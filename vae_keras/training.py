"""Training with the reference protocol: device choice, per-epoch test ELBO, checkpoints, resume."""

import contextlib
import dataclasses
import math
import time
from pathlib import Path

import keras
import numpy as np
from keras import ops

from vae_keras import backends, records
from vae_keras.checks import check_choice, check_int
from vae_keras.config import EXECUTION_ENVIRONMENTS, VAEConfig
from vae_keras.data import load_mnist
from vae_keras.models import VAE, save_model_atomically


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
    check_choice("execution_environment", execution_environment, EXECUTION_ENVIRONMENTS)
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
        check_int("batch_size", batch_size, maximum=len(x), maximum_is="the number of training images")
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
            sampling.reseed(self.seed, stream=epoch)
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
        state = self.resume_from / records.CHECKPOINT_STATE
        try:
            self.model.load_weights(state)
        except Exception as error:  # h5py and Keras raise many types for a damaged file
            raise ValueError(
                f"{state} could not be loaded ({type(error).__name__}: {error}); it was changed "
                f"since it was written. Choose another output folder, or {records.START_AFRESH}"
            ) from None
        steps = int(ops.convert_to_numpy(optimizer.iterations))
        if self.expected_steps is not None and steps != self.expected_steps:
            raise ValueError(
                f"{state} holds an optimizer after {steps} steps, "
                f"not the {self.expected_steps} of its {len(self.rows)} epochs; it does not "
                f"belong to this run. Choose another output folder, or {records.START_AFRESH}"
            )

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor.nan_at is not None:
            return
        row = {"epoch": epoch}
        row.update({name: float(value) for name, value in sorted((logs or {}).items())})
        self.rows.append(row)
        meta = {"epoch": epoch + 1, "finished": epoch + 1 >= self.epochs, "history": self.rows}
        records.write_checkpoint(self.model, self.output_dir, meta)
        records.write_history(self.output_dir / records.HISTORY_FILE, self.rows)


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
    """

    model: VAE
    history: dict
    output_dir: Path


@dataclasses.dataclass
class Run:
    """A training run, built and ready to fit: `train` is `build_run`, then `Run.fit`.

    Attributes:
        config: the `VAEConfig`.
        device: the device it trains on, such as "cpu:0".
        model: the compiled `VAE`.
        batches: the `EpochBatches` of the training images.
        x_test: the test images of the per-epoch test ELBO.
        monitor: the run's `TrainingMonitor`.
        callbacks: every callback `fit` gets, the monitor included.
        initial_epoch: the first epoch to train (0-based; after a resume, the
            number of epochs already finished).
        distribution: the `keras.distribution.DataParallel` it trains under, or None.
    """

    config: VAEConfig
    device: str
    model: VAE
    batches: EpochBatches
    x_test: np.ndarray
    monitor: TrainingMonitor
    callbacks: list
    initial_epoch: int = 0
    distribution: object = None

    def fit(self, epochs=None, validate=True, verbose=1):
        """`model.fit` on the run's batches and callbacks, in its device scope.

        Args:
            epochs: the epoch to stop after (as `fit`'s `epochs`); None: the
                configuration's.
            validate: evaluate the test ELBO after each epoch.
            verbose: Keras' verbosity.

        Returns:
            Keras' `History`.
        """
        with _scope(self.device, self.distribution):
            return self.model.fit(
                self.batches,
                shuffle=False,  # EpochBatches orders the images itself
                steps_per_epoch=self.batches.steps,
                initial_epoch=self.initial_epoch,
                epochs=self.config.epochs if epochs is None else epochs,
                validation_data=self.x_test if validate else None,
                validation_batch_size=self.config.eval_batch_size,
                callbacks=self.callbacks,
                verbose=verbose,
            )


def build_run(config, data=None, device=None, output_dir=None, resume=None, callbacks=(), verbose=1):
    """Builds a training run: seeds, data, model and callbacks, all that `fit` needs.

    Args:
        config: a `VAEConfig`.
        data: `((x_train, y_train), (x_test, y_test))` as `load_mnist` returns;
            read from the project's `data/` folder when None.
        device: the device to train on, from `select_device`; None chooses it.
        output_dir: the run folder each finished epoch's model, checkpoint and
            history are written to, or None to write nothing.
        resume: the checkpoint `(folder, meta)` to resume from, as
            `records.prepare` returns it, or None.
        callbacks: further Keras callbacks.
        verbose: print the compile settings, and the reference's line per epoch.

    Returns:
        A `Run`.
    """
    device = device or select_device(config.execution_environment, verbose=False)
    backends.set_random_seed(config.seed)
    if not resolve_jit_compile(config, device):
        # Keras turns XLA off where op determinism is on, so only without XLA.
        backends.enable_determinism(device)
    (x_train, _), (x_test, _) = data if data is not None else load_mnist()
    batches = EpochBatches(
        x_train[: config.train_size], config.batch_size, config.epochs, shuffle=config.shuffle, seed=config.seed
    )
    distribution = make_distribution(config, device)
    with _scope(device, distribution):
        model = build_model(config, device, batches.steps)
    if verbose:
        print(
            f"Compiled: jit_compile={model.jit_compile}, steps_per_execution={model.steps_per_execution}"
            + (f", data parallel over {len(distribution.device_mesh.devices.flat)} devices" if distribution else "")
            + "."
        )
    history = resume[1]["history"] if resume is not None else []
    model_path = None if output_dir is None else Path(output_dir) / records.MODEL_FILE
    monitor = TrainingMonitor(batches, config.seed, model_path, verbose=bool(verbose))
    # The progress bar first, so that its epoch line ends before the reference's line.
    run_callbacks = [keras.callbacks.ProgbarLogger(), monitor]
    if output_dir is not None:
        resume_from = resume[0] if resume is not None else None
        run_callbacks.append(
            EpochCheckpoint(output_dir, config.epochs, monitor, resume_from, history, batches.steps)
        )
    return Run(
        config=config,
        device=device,
        model=model,
        batches=batches,
        x_test=x_test[: config.test_size],
        monitor=monitor,
        callbacks=[*run_callbacks, *callbacks],
        initial_epoch=len(history),
        distribution=distribution,
    )


def train(config=None, output_dir="runs/vae", data=None, verbose=1, overwrite=False, callbacks=()):
    """Trains a VAE with the reference protocol and reports the test ELBO each epoch.

    The run writes into `output_dir` (see `vae_keras.records`): `config.json`,
    `history.csv` (one row per epoch), `vae.keras` (the model after the last
    finished epoch), `checkpoint/` (the last finished epoch's model and
    optimizer state, written whole or not at all, see `EpochCheckpoint`) and
    `.lock` (one training per folder at a time). If a run in the same folder
    was interrupted, at any moment, calling `train` again with the same
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
    with records.locked(output_dir):
        resume = records.prepare(output_dir, config, overwrite, verbose)
        run = build_run(config, data, device, output_dir, resume, callbacks, verbose)
        if resume is not None and verbose:
            print(f"Resuming the interrupted run in {output_dir} after its epoch {run.initial_epoch}.")
        start = time.perf_counter()
        run.fit(verbose=verbose)
        if verbose:
            print(
                f"Training took {time.perf_counter() - start:.1f} s (compilation, {config.epochs} "
                "epochs' training and test evaluations)."
            )
    history_path = output_dir / records.HISTORY_FILE
    history = records.read_history(history_path) if history_path.is_file() else {"epoch": []}
    if run.monitor.nan_at is not None:
        epoch, batch = run.monitor.nan_at
        kept = (
            f"The model of the last finished epoch is in {output_dir / records.MODEL_FILE}"
            if (output_dir / records.MODEL_FILE).is_file()
            else "No epoch finished, so no model was saved"
        )
        raise TrainingDiverged(
            f"Training stopped: the loss became NaN or infinite at epoch {epoch + 1}, "
            f"batch {batch + 1} (learning_rate={config.learning_rate}). {kept}; try a lower "
            "learning rate."
        )
    return TrainingResult(model=run.model, history=history, output_dir=output_dir)


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


def _scope(device, distribution):
    """The device scope, and the data-parallel one where there is one."""
    stack = contextlib.ExitStack()
    stack.enter_context(backends.device_scope(device))
    if distribution is not None:
        stack.enter_context(distribution.scope())
    return stack
