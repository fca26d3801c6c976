"""Training with the reference protocol: build a run (seeds, data, model, callbacks), fit it, report the test ELBO."""

import dataclasses
import time
from pathlib import Path

import keras
import numpy as np

from vae_keras import backends, records
from vae_keras.callbacks import EpochCheckpoint, TrainingMonitor
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
    model = VAE(latent_dim=config.latent_dim, seed=config.seed, precision=config.precision)
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
        with backends.scope(self.device, self.distribution):
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
        output_dir: the run folder each finished epoch is written to, or None
            to write nothing.
        resume: the `records.Checkpoint` to resume from, or None.
        callbacks: further Keras callbacks.
        verbose: print the compile settings, and the reference's line per epoch.

    Returns:
        A `Run`.
    """
    device = device or backends.select_device(config.execution_environment, verbose=False)
    backends.set_random_seed(config.seed)
    jit_compile = backends.jit_compile(config.jit_compile, device)
    if not jit_compile:
        # Keras turns XLA off where op determinism is on, so only without XLA.
        backends.enable_determinism(device)
    (x_train, _), (x_test, _) = data if data is not None else load_mnist()
    batches = EpochBatches(
        x_train[: config.train_size], config.batch_size, config.epochs, shuffle=config.shuffle, seed=config.seed
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
        run_callbacks.append(EpochCheckpoint(output_dir, config.epochs, monitor, resume, batches.steps))
    return Run(
        config=config,
        device=device,
        model=model,
        batches=batches,
        x_test=x_test[: config.test_size],
        monitor=monitor,
        callbacks=[*run_callbacks, *callbacks],
        initial_epoch=resume.epoch if resume is not None else 0,
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
    device = backends.select_device(config.execution_environment, verbose=bool(verbose))
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
