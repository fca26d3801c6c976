"""Training with the reference protocol: build a run (seeds, data, model, callbacks), fit it, report the test ELBO."""

import dataclasses
import time
from pathlib import Path

import keras
import numpy as np

from vae_keras import backends, records
from vae_keras.callbacks import EpochCheckpoint, TrainingMonitor, restore
from vae_keras.config import VAEConfig
from vae_keras.data import EpochBatches, load_mnist
from vae_keras.models import VAE


def make_optimizer(config):
    """Adam with the reference's settings (MATLAB `adamupdate` defaults)."""
    return keras.optimizers.Adam(
        learning_rate=config.learning_rate, beta_1=0.9, beta_2=0.999, epsilon=config.adam_epsilon
    )


def build_model(config, device="cpu:0", steps_per_epoch=None, jit_compile=None):
    """A new `VAE` compiled with the configuration's optimizer and step settings.

    Args:
        config: a `VAEConfig`.
        device: the device it will train on (decides the "auto" settings).
        steps_per_epoch: batches per epoch; None: `config.steps_per_epoch()`.
        jit_compile: whether to compile the train step; None: as
            `config.jit_compile` decides on `device`.

    Returns:
        A compiled `VAE`.
    """
    steps_per_epoch = config.steps_per_epoch() if steps_per_epoch is None else steps_per_epoch
    model = VAE(
        latent_dim=config.latent_dim, seed=config.seed, precision=config.precision, likelihood=config.likelihood,
        beta=config.beta, kl_warmup_epochs=config.kl_warmup_epochs, conditional=config.conditional,
    )
    model.compile(
        optimizer=make_optimizer(config),
        jit_compile=backends.jit_compile(config.jit_compile, device) if jit_compile is None else jit_compile,
        steps_per_execution=backends.steps_per_execution(config.steps_per_execution, device, steps_per_epoch),
    )
    return model


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
        y_test: their labels (a conditional model is fed them).
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
    y_test: np.ndarray | None = None

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
        with backends.scope(self.device, self.distribution):
            return self.model.fit(
                self.batches,
                shuffle=False,  # EpochBatches orders the images itself
                steps_per_epoch=self.batches.steps,
                initial_epoch=self.initial_epoch,
                epochs=self.config.epochs if epochs is None else epochs,
                validation_data=(self.model.join_inputs(self.x_test, self.y_test),) if validate else None,
                validation_batch_size=self.config.eval_batch_size,
                callbacks=self.callbacks,
                verbose=verbose,
            )


def build_run(config, data=None, device=None, output_dir=None, resume=None, callbacks=(), verbose=1):
    """Builds a training run (seeds, data, model, callbacks): all that `Run.fit` needs.

    Args:
        config: a `VAEConfig`.
        data: `((x_train, y_train), (x_test, y_test))`; None reads `data/`.
        device: from `select_device`; None chooses it.
        output_dir: the run folder each finished epoch is written to; None: nothing is written.
        resume: the `records.Checkpoint` to resume from, or None.
        callbacks: further Keras callbacks.
        verbose: print the compile settings, and the reference's line per epoch.
    """
    device = device or backends.select_device(config.execution_environment, verbose=False)
    backends.set_random_seed(config.seed)
    jit_compile = backends.jit_compile(config.jit_compile, device)
    if not jit_compile:
        # Keras turns XLA off where op determinism is on, so only without XLA.
        backends.enable_determinism(device)
    (x_train, y_train), (x_test, y_test) = data if data is not None else load_mnist()
    batches = EpochBatches(
        x_train[: config.train_size], config.batch_size, config.epochs, shuffle=config.shuffle, seed=config.seed,
        labels=y_train[: config.train_size] if config.conditional else None,
    )
    distribution = backends.distribution(
        config.data_parallel, device, {"batch_size": config.batch_size, "eval_batch_size": config.eval_batch_size}
    )
    with backends.scope(device, distribution):
        model = build_model(config, device, batches.steps, jit_compile)
    if verbose:
        print(
            f"Compiled: jit_compile={model.jit_compile}, steps_per_execution={model.steps_per_execution}"
            + (f", data parallel over {len(distribution.device_mesh.devices.flat)} devices" if distribution else "")
            + "."
        )
    model_path = None if output_dir is None else Path(output_dir) / records.MODEL_FILE
    monitor = TrainingMonitor(batches, config.seed, model_path, verbose=bool(verbose))
    # The progress bar first, so that its epoch line ends before the reference's line.
    run_callbacks = [keras.callbacks.ProgbarLogger(), monitor]
    if output_dir is not None:
        identity = records.run_identity(config, backends.BACKEND)
        run_callbacks.append(EpochCheckpoint(output_dir, identity, monitor, resume, batches.steps))
    return Run(
        config=config,
        device=device,
        model=model,
        batches=batches,
        x_test=x_test[: config.test_size],
        y_test=y_test[: config.test_size],
        monitor=monitor,
        callbacks=[*run_callbacks, *callbacks],
        initial_epoch=resume.epoch if resume is not None else 0,
        distribution=distribution,
    )


def train(config=None, output_dir="runs/vae", data=None, verbose=1, overwrite=False, callbacks=()):
    """Trains a VAE with the reference protocol into `output_dir`, resuming an interrupted run there.

    The folder's files are described in `vae_keras.records`; calling `train`
    again after a kill resumes after the last finished epoch, to the result of
    an uninterrupted run.

    Args:
        config: a `VAEConfig`; the reference settings when None.
        output_dir: folder of the run.
        data: `((x_train, y_train), (x_test, y_test))` as `load_mnist` returns; None reads `data/`.
        verbose: 0 silent, 1 progress bar, 2 one line per epoch (both add the reference's line).
        overwrite: start afresh even where `output_dir` holds a finished run.
        callbacks: further Keras callbacks.

    Returns:
        A `TrainingResult`.

    Raises:
        FileExistsError: the folder holds a finished run, or one of another configuration.
        TrainingDiverged: the loss became NaN; the last good epoch's model stays.
        RuntimeError: "gpu" without a GPU, or another training holds the folder.
        ValueError: a damaged checkpoint or `config.json` (named; nothing is overwritten).
    """
    config = config if config is not None else VAEConfig()
    if not isinstance(config, VAEConfig):
        raise TypeError(f"config must be a VAEConfig, received {type(config).__name__}")
    output_dir = Path(output_dir)
    device = backends.select_device(config.execution_environment, verbose=bool(verbose))
    output_dir.mkdir(parents=True, exist_ok=True)
    with records.locked(output_dir):
        resume = records.prepare(output_dir, config, records.run_identity(config, backends.BACKEND), overwrite, verbose)
        if resume is not None and resume.finished:
            _rebuild_model_file(config, device, output_dir, resume)
            raise FileExistsError(
                f"{output_dir} already holds a finished run ({output_dir / records.MODEL_FILE}); choose another "
                "output folder or pass overwrite=True (--overwrite) to replace it."
            )
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


def _rebuild_model_file(config, device, output_dir, checkpoint):
    """Writes a finished run's missing `vae.keras` from its checkpoint."""
    path = Path(output_dir) / records.MODEL_FILE
    if not path.is_file():
        with backends.scope(device):
            model = build_model(config, device)
        restore(model, checkpoint, config.steps_per_epoch(), path)


def evaluate(model, x, y=None, batch_size=2_000, verbose=0):
    """The test ELBO of a model on images `x`, with z sampled as in the reference.

    Args:
        model: a `VAE`.
        x: images, shape (N, 28, 28, 1), values in [0, 1].
        y: their labels, needed by a conditional model (not used by others).
        batch_size: images per evaluation batch (speed only).
        verbose: Keras verbosity.

    Returns:
        A dict of floats: `elbo`, `reconstruction_loss`, `kl_loss`.

    Raises:
        ValueError: when a conditional model is given no labels.
    """
    if model.conditional and y is None:
        raise ValueError("This VAE is conditional: evaluate needs the images' labels (y=...)")
    if not model.compiled:
        model.compile(optimizer=keras.optimizers.Adam())
    results = model.evaluate(model.join_inputs(x, y), batch_size=batch_size, verbose=verbose, return_dict=True)
    return {name: float(results[name]) for name in ("elbo", "reconstruction_loss", "kl_loss")}
