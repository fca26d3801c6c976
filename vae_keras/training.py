"""Training with the reference protocol: `train` builds a run (seeds, data, model, callbacks) in its folder, fits it
and returns it. The run's own callbacks, one job each, close the file: the epoch's noise and KL weight, the
reference's line, and the two ways a run stops (a dead network, a Ctrl-C)."""

import dataclasses
import math
import signal
import threading
import time
from pathlib import Path

import keras
import numpy as np

from vae_keras import backends
from vae_keras.config import VAEConfig
from vae_keras.data import EpochBatches, load_mnist
from vae_keras.images import load_images
from vae_keras.models import VAE, ConditionalVAE
from vae_keras.run_folder import CONFIG_FILE, HISTORY_FILE, MODEL_FILE, EpochWriter, RunFolder, read_history, run_identity


def build_model(config, device="cpu:0", steps_per_epoch=None, jit_compile=None, model_class=None):
    """A new `VAE` (a `ConditionalVAE` for `config.conditional`) compiled with Adam and the step settings.

    `device` decides the "auto" settings; `steps_per_epoch` (None: `config.steps_per_epoch()`) bounds
    `steps_per_execution`; `jit_compile` None: as `config.jit_compile` decides on `device`; `model_class` a
    subclass to build instead (notebook 5's plain autoencoder)."""
    steps_per_epoch = config.steps_per_epoch() if steps_per_epoch is None else steps_per_epoch
    model = (model_class or (ConditionalVAE if config.conditional else VAE))(
        latent_dim=config.latent_dim, seed=config.seed, precision=config.precision, likelihood=config.likelihood,
        beta=config.beta, kl_warmup_epochs=config.kl_warmup_epochs, image_shape=config.image_shape)
    model.compile(
        # The reference's Adam: MATLAB adamupdate's defaults.
        optimizer=keras.optimizers.Adam(config.learning_rate, beta_1=0.9, beta_2=0.999, epsilon=config.adam_epsilon),
        jit_compile=backends.jit_compile(config.jit_compile, device) if jit_compile is None else jit_compile,
        steps_per_execution=backends.steps_per_execution(config.steps_per_execution, device, steps_per_epoch))
    return model


class TrainingDiverged(FloatingPointError):
    """Raised when training can no longer learn: a NaN or infinite loss, or a dead decoder."""


@dataclasses.dataclass
class TrainingResult:
    """What `train` returns: the trained `model`, its `history` read back from the run's CSV (one list per column:
    `epoch` 1-based, `elbo`, `val_elbo` = test ELBO...; earlier sessions' epochs included) and the run folder."""

    model: VAE
    history: dict
    output_dir: Path


@dataclasses.dataclass
class Run:
    """A training run, built and ready to fit: `train` is `build_run`, then `Run.fit`.

    `validation` is what the per-epoch test ELBO is evaluated on (the test images, with their labels for a
    conditional model); `guard` the run's `StopOnDivergence`; `initial_epoch` the epochs already finished (a
    resumed run's); `distribution` the `keras.distribution.DataParallel` it trains under, or None."""

    config: VAEConfig
    device: str
    model: VAE
    batches: EpochBatches
    validation: object
    callbacks: list
    guard: "StopOnDivergence"
    initial_epoch: int = 0
    distribution: object = None

    def fit(self, epochs=None, validate=True, verbose=1):
        """`model.fit` on the run's batches and callbacks, in its device scope, to epoch `epochs` (None: the
        configuration's), with the per-epoch test ELBO if `validate`; Keras' `History`."""
        ctrl_c = StopOnCtrlC()
        with backends.scope(self.device, self.distribution), ctrl_c:
            return self.model.fit(
                self.batches, shuffle=False,  # EpochBatches orders the images itself
                steps_per_epoch=self.batches.steps, initial_epoch=self.initial_epoch,
                epochs=self.config.epochs if epochs is None else epochs,
                validation_data=(self.validation,) if validate else None,
                validation_batch_size=self.config.eval_batch_size,
                callbacks=[*self.callbacks, ctrl_c], verbose=verbose)


def load_data(config, data=None):
    """The run's `((x_train, y_train), (x_test, y_test))`: `data` itself, or `config.images`, or MNIST, checked
    against `config` (a ValueError for another image shape, or fewer images than `train_size` or `batch_size`)."""
    if data is None and config.images is not None:
        data = load_images(config.images, size=config.resize, test_fraction=config.test_fraction, seed=config.seed)
    elif data is None:
        data = load_mnist()
    (x_train, y_train), (x_test, _) = data
    source = config.images or "the data"
    for name, x in (("training", x_train), ("test", x_test)):
        if tuple(x.shape[1:]) != config.image_shape:
            raise ValueError(f"The {name} images of {source} have shape {tuple(x.shape[1:])}, but "
                             f"image_shape={config.image_shape}: pass image_shape={tuple(x.shape[1:])} "
                             f"(--image-shape {'x'.join(map(str, x.shape[1:]))})")
    n_train = len(x_train) if config.train_size is None else config.train_size
    if n_train > len(x_train) or config.batch_size > n_train:
        raise ValueError(f"{source} holds {len(x_train)} training images: train_size={config.train_size} and "
                         f"batch_size={config.batch_size} must be at most that (and batch_size at most train_size)")
    if config.conditional and y_train is None:
        raise ValueError("conditional=True needs the images' digit labels; these images have none")
    return data


def build_run(config, data=None, device=None, callbacks=(), verbose=1, initial_epoch=0, model_class=None):
    """Builds a training run (seeds, data, model, callbacks): all that `Run.fit` needs; writes nothing.

    `data` None reads it as `load_data` does; `device` None chooses it (`select_device`); `callbacks` are
    further Keras callbacks; `verbose` prints the compile settings and the reference's line per epoch;
    `initial_epoch` is the epochs already finished (a resumed run's); `model_class` as `build_model` takes it."""
    device = device or backends.device_for(config.execution_environment, verbose=False)
    return _build_run(config, load_data(config, data), device, callbacks, verbose, initial_epoch, model_class)


def _build_run(config, data, device, callbacks, verbose, initial_epoch, model_class=None):
    """`build_run` once the data is read and checked and the device chosen, as `train` has them."""
    (x_train, y_train), (x_test, y_test) = data
    guard = StopOnDivergence(config.learning_rate)
    # The progress bar first, so that its epoch line ends before the reference's line.
    run_callbacks = [keras.callbacks.ProgbarLogger(), EpochStart(config.seed), ReferenceLine(bool(verbose)), guard]
    batches = EpochBatches(
        x_train[: config.train_size], config.batch_size, config.epochs, shuffle=config.shuffle, seed=config.seed,
        labels=y_train[: config.train_size] if config.conditional else None, first_epoch=initial_epoch)
    backends.set_random_seed(config.seed)
    jit_compile = backends.jit_compile(config.jit_compile, device)
    if not jit_compile:  # Keras turns XLA off where op determinism is on, so only without XLA
        backends.enable_determinism(device)
    batch_sizes = {"batch_size": config.batch_size, "eval_batch_size": config.eval_batch_size}
    distribution = backends.distribution(config.data_parallel, device, batch_sizes)
    with backends.scope(device, distribution):
        model = build_model(config, device, batches.steps, jit_compile, model_class)
    if verbose:
        parallel = f", data parallel over {len(distribution.device_mesh.devices.flat)} devices" if distribution else ""
        print(f"Compiled: jit_compile={model.jit_compile}, steps_per_execution={model.steps_per_execution}{parallel}.")
    return Run(
        config=config, device=device, model=model, batches=batches,
        validation=model.join_inputs(x_test[: config.test_size], None if y_test is None else y_test[: config.test_size]),
        callbacks=[*run_callbacks, *callbacks], guard=guard, initial_epoch=initial_epoch, distribution=distribution)


def train(config=None, output_dir="runs/vae", data=None, verbose=1, overwrite=False, callbacks=()):
    """Trains a VAE with the reference protocol in the folder `output_dir`, resuming or extending the run there.

    Each finished epoch is written to the folder whole (`vae_keras.run_folder`). Called again after a kill, `train`
    resumes after the last finished epoch, to the result of an uninterrupted run; on a folder holding the same finished
    run it returns that run at once; asked for more epochs than the run holds, it carries on from its last epoch.

    Args:
        config: a `VAEConfig`; the reference settings when None.
        data: `((x_train, y_train), (x_test, y_test))` as `load_mnist` or `load_images` returns; None reads
            `config.images`, else MNIST from `data/`.
        verbose: 0 silent, 1 Keras' progress bar and the reference's line, 2 the reference's line alone (one line
            per epoch, as MATLAB prints it).
        overwrite: start afresh, deleting the run `output_dir` holds.
        callbacks: further Keras callbacks.

    Returns a `TrainingResult`.

    Raises:
        FileExistsError: the folder holds another run (the differing fields named).
        TrainingDiverged: the loss became NaN, or the decoder died; the last good epoch's model stays.
        RuntimeError: "gpu" without a GPU, or another training holds the folder.
        ValueError: a damaged checkpoint or `config.json` (named; nothing is overwritten).
    """
    config = config if config is not None else VAEConfig()
    if not isinstance(config, VAEConfig):
        raise TypeError(f"config must be a VAEConfig, received {type(config).__name__}")
    backends.check_floatx()
    device = backends.device_for(config.execution_environment, verbose=bool(verbose))
    data = load_data(config, data)
    folder = RunFolder(output_dir)
    identity = run_identity(config, backends.BACKEND, data)
    with folder.locked():
        checkpoint = folder.check(identity, overwrite)
        restarting = checkpoint is None and (folder / CONFIG_FILE).exists()
        initial_epoch = checkpoint.epoch if checkpoint is not None else 0
        writer = EpochWriter(folder, identity, checkpoint.history if checkpoint else ())
        run = _build_run(config, data, device, [writer, *callbacks], verbose, initial_epoch)
        writer.stopped = lambda: run.guard.problem is not None
        if checkpoint is not None:
            folder.restore(run.model, checkpoint, run.batches.steps)
        folder.start(identity, checkpoint)  # every check passed: only now is anything written
        if initial_epoch == config.epochs:
            if verbose:
                print(f"{folder.path} holds this finished run ({config.epochs} epochs): loaded, not trained again.")
            return TrainingResult(run.model, read_history(folder / HISTORY_FILE), folder.path)
        if verbose and checkpoint is not None:
            print(f"Resuming the run in {folder.path} after its epoch {initial_epoch}.")
        if verbose and restarting:
            print(f"{folder.path} holds an unfinished run with no finished epoch to resume from (stopped in its first "
                  "epoch, or by a NaN loss): training starts again from epoch 1.")
        start = time.perf_counter()
        run.fit(verbose=1 if verbose == 1 else 0)  # 2: ReferenceLine's line alone
        if verbose:
            print(f"Training took {time.perf_counter() - start:.1f} s (compilation, {config.epochs - initial_epoch} "
                  "epochs' training and test evaluations).")
    if run.guard.problem is not None:
        kept = (f"The model of the last finished epoch is in {folder / MODEL_FILE}" if (folder / MODEL_FILE).is_file()
                else "No epoch finished, so no model was saved")
        raise TrainingDiverged(f"Training stopped: {run.guard.problem}. {kept}.")
    return TrainingResult(model=run.model, history=read_history(folder / HISTORY_FILE), output_dir=folder.path)


def evaluate(model, x, y=None, batch_size=2_000, verbose=0):
    """The test ELBO of a model on images `x` (and their labels `y`, for a conditional model), z sampled as in the
    reference: a dict of floats, `elbo`, `reconstruction_loss`, `kl_loss`."""
    backends.check_floatx()
    if not model.compiled:
        model.compile(optimizer=keras.optimizers.Adam())
    inputs = model.join_inputs(np.asarray(x), y)
    results = model.evaluate(inputs, batch_size=batch_size, verbose=verbose, return_dict=True)
    return {name: float(results[name]) for name in ("elbo", "reconstruction_loss", "kl_loss")}


class EpochStart(keras.callbacks.Callback):
    """Sets what depends on the epoch alone at its start, so that a resumed run repeats an uninterrupted one.

    The sampling noise restarts from a stream of the seed and the epoch, and a
    KL warm-up's weight is `beta * min(1, epoch / kl_warmup_epochs)`."""

    def __init__(self, seed):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        self.model.sampling.reseed(self.seed, stream=epoch)
        if self.model.kl_weight is not None:
            self.model.kl_weight.assign(kl_weight_at(self.model, epoch))


def kl_weight_at(model, epoch):
    """The KL term's weight in epoch `epoch` (0-based): beta, reached linearly over the warm-up's epochs."""
    return model.beta * min(1.0, epoch / model.kl_warmup_epochs) if model.kl_warmup_epochs else model.beta


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
            print(f"Epoch : {epoch + 1} Test ELBO loss = {float(logs['val_elbo']):.4f}. "
                  f"Time taken for epoch = {logs['epoch_seconds']:.4f}s", flush=True)


class StopOnDivergence(keras.callbacks.Callback):
    """Stops training when it can no longer learn: a NaN or infinite loss, or a dead decoder.

    A decoder is dead when it draws one flat image for every code (its units output 0 whatever they are given), as a
    too-high learning rate leaves it; no gradient reaches it again, so the run would end with a model that draws grey
    squares. The epoch that showed it is not kept. `problem`: None, or what happened, for the error `train` raises."""

    def __init__(self, learning_rate=None):
        super().__init__()
        self.learning_rate, self.problem, self._epoch = learning_rate, None, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("elbo")
        if loss is not None and not math.isfinite(float(loss)):
            self._stop(f"the loss became NaN or infinite at epoch {self._epoch + 1}, batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        if self.problem is None:
            images = self.model.decode_codes(self.model.prior_codes(16, seed=0), self.model.prior_labels(16))
            if np.ptp(images) < 1e-6:
                self._stop(f"after epoch {epoch + 1} the decoder draws the same flat image (grey level "
                           f"{float(images.flat[0]):.3f}) for every code: its units died and cannot learn again")

    def _stop(self, problem):
        self.problem = problem + f" (learning_rate={self.learning_rate}; too high a learning rate is the usual cause)"
        self.model.stop_training = True


class StopOnCtrlC(keras.callbacks.Callback):
    """Turns a Ctrl-C (SIGINT) during `fit` into a `KeyboardInterrupt` at the next batch's end, never lost.

    Python runs a signal handler wherever the main thread is, a garbage-collector callback included, and an exception
    raised there is printed and ignored (JAX's `_xla_gc_callback` swallowed one in 32 Ctrl-Cs). This handler only
    records the signal; the callback raises it where `fit` can stop. A second Ctrl-C interrupts at once. Use as a
    context manager around `fit`."""

    def __init__(self):
        super().__init__()
        self.pressed, self._previous = False, None

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
