"""One configuration object holding the reference example's training settings."""

import dataclasses
import os

import numpy as np

# Numeric precision of the layers' computations: "float32" as the reference, or
# "mixed_bfloat16" (bfloat16 arithmetic, float32 weights, loss and optimizer).
PRECISIONS = ("float32", "mixed_bfloat16")

# Where training can run: the three values of the reference's `executionEnvironment`.
EXECUTION_ENVIRONMENTS = ("auto", "cpu", "gpu")

# Set to "1" (pytest does, in conftest.py) to make the notebooks run short.
QUICK_ENV_VAR = "VAE_KERAS_QUICK"

# Number of MNIST training images; the reference takes floor(60000 / 512) = 117
# full mini-batches per epoch and drops the last 96 images.
MNIST_TRAIN_SIZE = 60_000


@dataclasses.dataclass
class VAEConfig:
    """Settings of one training run; the defaults are the MATLAB example's.

    Notebooks, the command line and tests override fields on it:
    `VAEConfig(epochs=1)`, `dataclasses.replace(config, seed=1)`.

    Raises:
        ValueError: when a field holds an invalid value; the message names the
            field and the value received.

    Example:

    >>> config = VAEConfig(epochs=2)
    >>> config.steps_per_epoch()
    117
    """

    # Size of the latent code z (the reference's `latentDim`).
    latent_dim: int = 20
    # Images per mini-batch (`miniBatchSize`).
    batch_size: int = 512
    # Passes over the training data (`numEpochs`).
    epochs: int = 50
    # Adam's step size (`lr`).
    learning_rate: float = 1e-3
    # Adam's epsilon; 1e-8 is MATLAB's `adamupdate` default (Keras' own is 1e-7).
    adam_epsilon: float = 1e-8
    # "auto" trains on a GPU when the Keras backend sees one, "cpu" or "gpu" force one.
    execution_environment: str = "auto"
    # Seeds Python, NumPy and the backend, so a CPU run repeats exactly.
    seed: int = 0
    # The reference takes the batches in order, the same every epoch (False);
    # True reshuffles the training images before each epoch.
    shuffle: bool = False
    # Number of training images to use: the first `train_size` of the 60,000.
    # None uses them all. Only whole batches are trained on, as the reference does.
    train_size: int | None = None
    # Number of test images for the per-epoch test ELBO; None uses all 10,000.
    test_size: int | None = None
    # Images per batch when evaluating the test set (does not change the result
    # beyond sampling noise, only the speed and the memory used).
    eval_batch_size: int = 2_000
    # Compile the train step (XLA, jax.jit, torch.compile): "auto" does so where
    # it measured faster (TensorFlow on a GPU, JAX always, never PyTorch),
    # True / False force it.
    jit_compile: bool | str = "auto"
    # Train steps run per call into the compiled graph (fewer Python round trips):
    # "auto" picks per backend and device what measured fastest (a whole epoch
    # per call with JAX on a GPU, else 1), or an integer >= 1.
    steps_per_execution: int | str = "auto"
    # "float32" computes as the reference does; "mixed_bfloat16" runs the
    # convolutions in bfloat16 (faster on CPUs with AVX512-BF16 or AMX and on
    # recent GPUs) while weights, loss and optimizer stay float32.
    precision: str = "float32"
    # Split each batch across several devices with keras.distribution.DataParallel:
    # "auto" does so where JAX sees several devices of the chosen kind, True
    # insists on it, False uses one device.
    data_parallel: bool | str = "auto"

    def __post_init__(self):
        _check_int("latent_dim", self.latent_dim, minimum=1)
        _check_int("batch_size", self.batch_size, minimum=1)
        _check_int("epochs", self.epochs, minimum=1)
        _check_int("seed", self.seed, minimum=0)
        if self.seed > 2**32 - 1:
            raise ValueError(f"seed must be at most 4294967295 (32 bits), received seed={self.seed!r}")
        _check_int("eval_batch_size", self.eval_batch_size, minimum=1)
        if self.steps_per_execution != "auto":
            _check_int("steps_per_execution", self.steps_per_execution, minimum=1)
        if self.train_size is not None:
            _check_int("train_size", self.train_size, minimum=1)
            if self.train_size > MNIST_TRAIN_SIZE:
                raise ValueError(
                    f"train_size must be at most {MNIST_TRAIN_SIZE} (the MNIST "
                    f"training set), received train_size={self.train_size!r}"
                )
        if self.test_size is not None:
            _check_int("test_size", self.test_size, minimum=1)
        n_train = MNIST_TRAIN_SIZE if self.train_size is None else self.train_size
        if self.batch_size > n_train:
            raise ValueError(
                f"batch_size must not exceed the number of training images "
                f"({n_train}), received batch_size={self.batch_size!r}"
            )
        if (
            isinstance(self.learning_rate, bool)
            or not isinstance(self.learning_rate, (int, float))
            or not self.learning_rate > 0
            or self.learning_rate != self.learning_rate
            or self.learning_rate == float("inf")
        ):
            raise ValueError(
                "learning_rate must be a finite number > 0, "
                f"received learning_rate={self.learning_rate!r}"
            )
        if (
            isinstance(self.adam_epsilon, bool)
            or not isinstance(self.adam_epsilon, (int, float))
            or not 0 < self.adam_epsilon < float("inf")
        ):
            raise ValueError(
                "adam_epsilon must be a finite number > 0, "
                f"received adam_epsilon={self.adam_epsilon!r}"
            )
        if self.execution_environment not in EXECUTION_ENVIRONMENTS:
            raise ValueError(
                f"execution_environment must be one of {EXECUTION_ENVIRONMENTS}, "
                f"received execution_environment={self.execution_environment!r}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {PRECISIONS}, received precision={self.precision!r}"
            )
        if not isinstance(self.shuffle, bool):
            raise ValueError(f"shuffle must be True or False, received shuffle={self.shuffle!r}")
        for name in ("jit_compile", "data_parallel"):
            value = getattr(self, name)
            if not isinstance(value, (bool, str)) or value not in (True, False, "auto"):
                raise ValueError(f"{name} must be True, False or 'auto', received {name}={value!r}")

    def steps_per_epoch(self, n_train=None):
        """Number of full mini-batches per epoch: floor(n_train / batch_size).

        Args:
            n_train: number of training images; defaults to `train_size`, or
                60,000 when that is None.

        Returns:
            An int, 117 for the reference settings.
        """
        if n_train is None:
            n_train = MNIST_TRAIN_SIZE if self.train_size is None else self.train_size
        return n_train // self.batch_size


def _check_int(name, value, minimum):
    """Raises a ValueError naming `name` unless `value` is an integer >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, received {name}={value!r}")


def quick_run():
    """Whether notebooks should run short: the one place `VAE_KERAS_QUICK` is read.

    Returns:
        True when the environment variable `VAE_KERAS_QUICK` is "1" (pytest
        sets it), False in an ordinary JupyterLab session.
    """
    return os.environ.get(QUICK_ENV_VAR, "") == "1"
