"""The reference example's settings and published numbers, and where the project's shipped files are."""

import dataclasses
import math
import os
from pathlib import Path

import numpy as np

# The checks of values that enter the package, one function per kind, one message style: each raises a
# ValueError naming the argument and the value received, "batch_size must be a positive integer, received
# batch_size=0". VAEConfig checks its fields with them once; public functions that take raw values, too.
# Seeds feed NumPy's and Keras' generators, which take 32-bit unsigned integers.
MAX_SEED = 2**32 - 1


def check_int(name, value, minimum=1, maximum=None, maximum_is=None):
    """Returns `value` if it is an integer in [minimum, maximum] (booleans are not), else raises; `maximum_is`
    says what the maximum is, for the message."""
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum
            or (maximum is not None and value > maximum)):
        if maximum is not None:
            wanted = f"an integer from {minimum} to {maximum}" + (f" ({maximum_is})" if maximum_is else "")
        else:
            wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        _fail(name, value, wanted)
    return value


def check_number(name, value, minimum=0.0, inclusive=False):
    """Returns `value` if it is a finite real number above `minimum` (or equal, if `inclusive`); raises otherwise."""
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
            or not math.isfinite(value) or not (value >= minimum if inclusive else value > minimum)):
        _fail(name, value, f"a finite number {'>=' if inclusive else '>'} {minimum:g}")
    return value


def check_choice(name, value, choices):
    """Returns `value` if it is one of `choices` (compared with ==, types included); raises otherwise."""
    if not any(type(value) is type(choice) and value == choice for choice in choices):
        _fail(name, value, f"one of {', '.join(map(repr, choices))}")
    return value


def _fail(name, value, wanted):
    raise ValueError(f"{name} must be {wanted}, received {name}={value!r}")


PRECISIONS = ("float32", "mixed_bfloat16")  # the reference's, or bfloat16 arithmetic with float32 weights and loss
LIKELIHOODS = ("gaussian", "bernoulli")  # the decoder's p(x | z): the reference's Gaussian of variance 1, or Bernoulli
EXECUTION_ENVIRONMENTS = ("auto", "cpu", "gpu")  # the reference's `executionEnvironment`
AUTO_BOOL = (True, False, "auto")  # the values of the fields that take True, False or "auto"
QUICK_ENV_VAR = "VAE_KERAS_QUICK"  # "1" (pytest sets it, in conftest.py) makes the notebooks run short

# MNIST: 60,000 training images (the reference takes floor(60000 / 512) = 117 full
# mini-batches per epoch and drops the last 96), 28 x 28 grey pixels, the digits 0-9.
MNIST_TRAIN_SIZE = 60_000
MNIST_IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10

# The sides of the images the networks take (pixels), and their channels: 1 grey, 3 colour.
MIN_IMAGE_SIDE, MAX_IMAGE_SIDE = 8, 512
CHANNELS = (1, 3)

# The reference's published test ELBO loss per epoch (MATLAB, GPU), epochs 1..50.
REFERENCE_TEST_ELBO = (
    28.0145, 24.8995, 23.2756, 21.151, 20.5335, 20.232, 19.9988, 19.8955, 19.7991, 19.6773,
    19.5181, 19.4532, 19.3771, 19.2893, 19.1641, 19.2175, 19.158, 19.085, 19.1169, 19.0791,
    19.0395, 18.9556, 18.9469, 18.924, 18.9124, 18.9595, 18.9256, 18.8708, 18.8602, 18.8563,
    18.8127, 18.7989, 18.8, 18.8095, 18.7601, 18.7469, 18.7049, 18.7084, 18.6858, 18.7284,
    18.6574, 18.6388, 18.7133, 18.6846, 18.6001, 18.5897, 18.6184, 18.6389, 18.5918, 18.5081,
)  # fmt: skip

# The files that ship with the project: the MNIST data, the model trained with the reference
# protocol and its history, the digit classifier, and notebook 5's models (models/README.md).
PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = PROJECT_DIR / "data"
PRETRAINED_MODEL_PATH = PROJECT_DIR / "models" / "vae_mnist.keras"
PRETRAINED_HISTORY_PATH = PROJECT_DIR / "models" / "vae_mnist_history.csv"
CLASSIFIER_PATH = PROJECT_DIR / "models" / "digit_classifier.keras"
CONDITIONAL_MODEL_PATH = PROJECT_DIR / "models" / "vae_mnist_conditional.keras"
LATENT2_MODEL_PATH = PROJECT_DIR / "models" / "vae_mnist_latent2.keras"


def _field(default, help, choices=None):
    """A dataclass field whose metadata holds its command-line help (and choices)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclasses.dataclass
class VAEConfig:
    """Settings of one training run; the defaults are the MATLAB example's.

    Override fields on it: `VAEConfig(epochs=1)`, `dataclasses.replace(config, seed=1)`. Every field is
    checked here, once: a ValueError names the field and the value received.

    >>> VAEConfig(epochs=2).steps_per_epoch()
    117
    """

    latent_dim: int = _field(20, "size of the latent code z (the reference's latentDim)")
    batch_size: int = _field(512, "images per mini-batch (miniBatchSize)")
    epochs: int = _field(50, "passes over the training data (numEpochs)")
    learning_rate: float = _field(1e-3, "Adam's learning rate (lr)")
    adam_epsilon: float = _field(1e-8, "Adam's epsilon; 1e-8 is MATLAB's adamupdate default (Keras' is 1e-7)")
    execution_environment: str = _field(
        "auto", "auto: a GPU where the Keras backend sees one, else the CPU; cpu or gpu force one",
        choices=EXECUTION_ENVIRONMENTS)
    seed: int = _field(0, "seeds Python, NumPy and the backend: the same seed gives the same losses on the CPU")
    shuffle: bool = _field(
        False, "reshuffle the training images before each epoch (the reference takes them in order)",
        choices=(True, False))
    train_size: int | None = _field(
        None, "train on the first N of the 60,000 training images (whole batches only, as the reference)")
    test_size: int | None = _field(None, "evaluate the per-epoch test ELBO on the first N test images")
    eval_batch_size: int = _field(2_000, "images per batch when evaluating (speed and memory only)")
    jit_compile: bool | str = _field(
        "auto", "compile the train step (XLA, jax.jit, torch.compile): auto does so where it measured "
        "faster (TensorFlow on a GPU, JAX always, never PyTorch)", choices=AUTO_BOOL)
    steps_per_execution: int | str = _field(
        "auto", "train steps per call into the compiled graph: auto (a whole epoch with JAX on a GPU, "
        "else 1) or an integer")
    precision: str = _field(
        "float32", "float32 as the reference, or mixed_bfloat16 (bfloat16 arithmetic; weights, loss and "
        "optimizer float32)", choices=PRECISIONS)
    beta: float = _field(1.0, "weight of the KL term in the training loss (beta-VAE); the reported ELBO keeps weight 1")
    kl_warmup_epochs: int = _field(0, "raise the KL weight linearly from 0 to beta over this many epochs (0: none)")
    likelihood: str = _field(
        "gaussian", "the decoder's distribution: gaussian (the reference: half the summed squared error) or "
        "bernoulli (the summed binary cross-entropy, as keras.io and TensorFlow)", choices=LIKELIHOODS)
    conditional: bool = _field(
        False, "a conditional VAE: the digit's label is given to the encoder and the decoder, so that "
        "generate can draw a chosen digit", choices=(True, False))
    data_parallel: bool | str = _field(
        "auto", "split each batch over all devices of the chosen kind with Keras' DataParallel (JAX): "
        "auto where there are several", choices=AUTO_BOOL)
    image_shape: tuple = _field(
        MNIST_IMAGE_SHAPE, "height, width and channels (1 grey, 3 colour) of the images the networks take, "
        f"sides {MIN_IMAGE_SIDE} to {MAX_IMAGE_SIDE}; with --images, those of the images (HxWxC)")
    images: str | None = _field(
        None, "train on your own images instead of MNIST: a folder of PNG or JPEG files, or an .npy or .npz file "
        "(vae_keras.load_images)")
    resize: tuple | None = _field(None, "with --images: resize every image to HxW pixels (else all must share one size)")
    test_fraction: float = _field(
        0.1, "with --images: the share of the images held out (seeded) for the per-epoch test ELBO")

    def __post_init__(self):
        self.image_shape = check_image_shape("image_shape", self.image_shape)
        if self.resize is not None:
            self.resize = check_image_shape("resize", self.resize, channels=False)
        if self.images is not None:
            if not isinstance(self.images, (str, os.PathLike)) or not str(self.images):
                raise ValueError(f"images must be the path of a folder or an array file, received images={self.images!r}")
            self.images = str(self.images)
            if self.conditional:
                raise ValueError("conditional=True needs each image's digit label, which MNIST has and your own images "
                                 f"(images={self.images!r}) do not; leave conditional off")
        elif self.resize is not None:
            raise ValueError(f"resize={self.resize!r} applies to your own images: give images= (--images) too")
        if not (isinstance(self.test_fraction, (int, float)) and not isinstance(self.test_fraction, bool)
                and 0 < self.test_fraction < 1):
            raise ValueError(f"test_fraction must be a number between 0 and 1, received test_fraction={self.test_fraction!r}")
        pixels = math.prod(self.image_shape)
        shape = "x".join(map(str, self.image_shape))
        check_int("latent_dim", self.latent_dim, maximum=pixels, maximum_is=f"the {pixels} values of a {shape} image")
        for name in ("epochs", "eval_batch_size"):
            check_int(name, getattr(self, name))
        check_int("seed", self.seed, minimum=0, maximum=MAX_SEED)
        if self.steps_per_execution != "auto":
            check_int("steps_per_execution", self.steps_per_execution)
        if self.train_size is not None:  # own images: their number is checked when they are read
            check_int("train_size", self.train_size, maximum=MNIST_TRAIN_SIZE if self.images is None else None)
        if self.test_size is not None:
            check_int("test_size", self.test_size)
        training_images = self.train_size or (MNIST_TRAIN_SIZE if self.images is None else None)
        check_int("batch_size", self.batch_size, maximum=training_images, maximum_is="the number of training images")
        check_number("learning_rate", self.learning_rate)
        check_number("adam_epsilon", self.adam_epsilon)
        check_number("beta", self.beta, inclusive=True)
        check_int("kl_warmup_epochs", self.kl_warmup_epochs, minimum=0)
        for field in dataclasses.fields(self):
            if field.metadata["choices"] is not None:
                check_choice(field.name, getattr(self, field.name), field.metadata["choices"])

    def steps_per_epoch(self, n_train=None):
        """Full mini-batches per epoch, floor(n_train / batch_size): 117 for the reference. `n_train`: the training
        images (None: `train_size`, else MNIST's 60,000)."""
        if n_train is None:
            n_train = MNIST_TRAIN_SIZE if self.train_size is None else self.train_size
        return n_train // self.batch_size


def check_image_shape(name, value, channels=True):
    """`value` as a tuple (height, width, channels), or (height, width) without `channels`; a ValueError naming `name`."""
    size = 3 if channels else 2
    wanted = "(height, width, channels)" if channels else "(height, width)"
    if isinstance(value, str):
        value = tuple(int(part) if part.isdigit() else part for part in value.lower().split("x"))
    if (not isinstance(value, (tuple, list)) or len(value) != size
            or not all(isinstance(side, (int, np.integer)) and not isinstance(side, bool) for side in value)
            or not all(MIN_IMAGE_SIDE <= side <= MAX_IMAGE_SIDE for side in value[:2])
            or (channels and value[2] not in CHANNELS)):
        raise ValueError(f"{name} must be {wanted}, sides from {MIN_IMAGE_SIDE} to {MAX_IMAGE_SIDE} pixels"
                         + (", channels 1 (grey) or 3 (colour)" if channels else "") + f", received {name}={value!r}")
    return tuple(int(side) for side in value)


def quick_run():
    """Whether notebooks should run short: `VAE_KERAS_QUICK` is "1" (pytest sets it); the one place it is read."""
    return os.environ.get(QUICK_ENV_VAR, "") == "1"
