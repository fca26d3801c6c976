"""What differs between Keras' backends besides the train step: start-up, devices, determinism, compilation.

Keras 3 runs the same model on TensorFlow, JAX and PyTorch; the backend is chosen when Keras is first imported, from
`KERAS_BACKEND` (else `~/.keras/keras.json`, else TensorFlow), and cannot change afterwards. The train steps, each
backend's own way of computing gradients, are in `models.py`, beside the model; everything else that asks which
backend runs is here.
"""

import contextlib
import os
import sys

from vae_keras.config import EXECUTION_ENVIRONMENTS, check_choice

# TensorFlow's C++ log lines ("failed call to cuInit" without a GPU, tf.data notices), read when it is first
# imported: "3" hides them; Python warnings and errors are unaffected. Set TF_CPP_MIN_LOG_LEVEL to see them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BACKENDS = ("tensorflow", "jax", "torch")  # the Keras backends this project runs on


@contextlib.contextmanager
def quiet_stderr():
    """Sends file descriptor 2 to /dev/null for the block: C++ logs bypass Python's `sys.stderr`."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (some embedded interpreters)
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


# TensorFlow prints oneDNN and CUDA notices from C++ on import and at its first
# look for a GPU, before its log level applies.
try:
    with quiet_stderr():
        import keras

        BACKEND = keras.backend.backend()
        if BACKEND == "tensorflow":
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")
            # Its Python warnings too ("triggered tf.function retracing": each run here
            # builds a new model, so a session that trains several traces several times).
            tf.get_logger().setLevel("ERROR")
        elif BACKEND == "jax":  # only the active backend's library: TensorFlow need not be installed
            import jax
        elif BACKEND == "torch":
            import torch
except (ImportError, ValueError) as error:  # ValueError: a backend name Keras does not know
    _wanted = os.environ.get("KERAS_BACKEND", "the backend of ~/.keras/keras.json")
    _message = (f"Keras could not start on {_wanted} ({type(error).__name__}: {error}). Install it (pip install "
                f"{_wanted if _wanted in BACKENDS else 'tensorflow'}), or choose an installed backend with "
                "KERAS_BACKEND=tensorflow, jax or torch.")
    if sys.argv[:1] == ["-m"] or os.path.basename(sys.argv[0]) == "vae-keras":
        # The command line (python -m vae_keras, vae-keras): one line, no traceback.
        print(f"error: {_message}", file=sys.stderr)
        raise SystemExit(2) from None
    raise ImportError(_message) from None

if BACKEND not in BACKENDS:
    raise ImportError(f"vae_keras trains on Keras' {', '.join(BACKENDS)} backends; Keras runs on "
                      f"{BACKEND!r} (KERAS_BACKEND or ~/.keras/keras.json). Set KERAS_BACKEND to one of those.")


def check_floatx():
    """Refuses, in one line, a Keras whose default float type is not float32 (`floatx` of ~/.keras/keras.json).

    The reference computes in float32; half precision is `VAEConfig(precision="mixed_bfloat16")`.
    """
    if keras.config.floatx() != "float32":
        raise ValueError(f"Keras' floatx is {keras.config.floatx()!r} (set in ~/.keras/keras.json or by "
                         "keras.config.set_floatx); vae_keras computes in float32: set \"floatx\": \"float32\" "
                         "(for half precision use --precision mixed_bfloat16)")


def backend_version():
    """The version of the active backend's library, such as "2.20.0"."""
    return sys.modules[BACKEND].__version__  # the backends are named as their libraries


def visible_gpus():
    """The GPUs the active backend can use, as a list of device names."""
    if BACKEND == "tensorflow":
        with quiet_stderr():  # TensorFlow logs its CUDA probing where there is no GPU
            return [device.name for device in tf.config.list_physical_devices("GPU")]
    if BACKEND == "jax":
        return [str(device) for device in jax.devices() if device.platform == "gpu"]
    return [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]


def select_device(execution_environment="auto", verbose=True):
    """Chooses where to train, as the reference's `executionEnvironment` does: "gpu:0" or "cpu:0", for `keras.device`.

    "auto": a GPU where the backend sees one, else the CPU; "gpu" without one is a
    RuntimeError. `verbose` prints the backend and the choice.
    """
    check_choice("execution_environment", execution_environment, EXECUTION_ENVIRONMENTS)
    return device_for(execution_environment, verbose)


def device_for(execution_environment, verbose):
    """`select_device` for a value already checked (a `VAEConfig`'s)."""
    gpus = [] if execution_environment == "cpu" else visible_gpus()
    if execution_environment == "gpu" and not gpus:
        raise RuntimeError(f"execution_environment='gpu' but Keras' {BACKEND} backend sees no GPU. Install a GPU "
                           f"build ({gpu_install_hint()}) on a machine with an NVIDIA GPU, or use "
                           "execution_environment='auto' or 'cpu'.")
    device = "gpu:0" if gpus else "cpu:0"
    if verbose:
        where = f"the GPU ({gpus[0]})" if gpus else "the CPU"
        print(f"Keras backend {BACKEND!r}, execution environment {execution_environment!r}: training on {where}, "
              f"device {device!r}.")
    return device


def gpu_install_hint():
    """How to get a GPU build of the active backend, for error messages."""
    return {"tensorflow": "pip install 'tensorflow[and-cuda]'", "jax": "pip install 'jax[cuda12]'",
            "torch": "pip install torch (the default Linux wheel is a CUDA build)"}[BACKEND]


def jit_compile(setting, device):
    """Whether the train step is compiled (XLA on TensorFlow, `jax.jit`, `torch.compile`).

    "auto" follows measurements (docs/backends.md): TensorFlow uses XLA on a GPU only (on a CPU it ran 2x slower);
    JAX always compiles (its eager mode runs op by op); PyTorch runs eagerly (`torch.compile` made the reference
    protocol slower on an H200: 52 s against 26 s).
    """
    if setting != "auto":
        return bool(setting)
    return BACKEND == "jax" or (BACKEND == "tensorflow" and device.startswith("gpu"))


def steps_per_execution(setting, device, steps_per_epoch):
    """Train steps per compiled call: "auto" runs a whole epoch per call with JAX on a GPU, else 1.

    There a step takes under 2 ms and Python's round trip between steps matters (0.184 s against 0.19-0.23 s per
    epoch on an H200); on a CPU 5 steps per call measured no faster (1.02x).
    """
    if setting != "auto":
        return setting
    return steps_per_epoch if BACKEND == "jax" and device.startswith("gpu") else 1


def distribution(setting, device, batch_sizes):
    """Keras' `DataParallel` over every device of the kind of `device` ("cpu:0"), or None for one device.

    `setting` is `VAEConfig.data_parallel`: "auto" splits each batch where JAX sees
    several devices of the kind, True insists (a ValueError on another backend or
    one device), False never. `batch_sizes`, `{name: size}`, must share evenly.
    """
    kind = device.split(":")[0]
    count = len(visible_gpus()) if kind == "gpu" else (len(jax.devices("cpu")) if BACKEND == "jax" else 1)
    if setting is False or (setting == "auto" and (BACKEND != "jax" or count < 2)):
        return None
    if BACKEND != "jax" or count < 2:
        raise ValueError(f"data_parallel=True needs the JAX backend and several devices; the {BACKEND} backend sees "
                         f"{count} {kind.upper()} device(s)")
    for name, size in batch_sizes.items():
        if size % count:
            raise ValueError(f"{name} must be a multiple of the {count} devices that share each batch, received {name}={size!r}")
    return keras.distribution.DataParallel(devices=keras.distribution.list_devices(kind))


def scope(device, data_parallel=None):
    """The device scope, and the data-parallel one where there is one, as one context manager.

    On PyTorch the CPU is named without an index: Keras moves each new weight with `.to("cpu:0")`, which
    would copy a weight made on "cpu" into a tensor that is no longer a trainable parameter.
    """
    if BACKEND == "torch" and device.startswith("cpu"):
        device = "cpu"
    stack = contextlib.ExitStack()
    stack.enter_context(keras.device(device))
    if data_parallel is not None:
        stack.enter_context(data_parallel.scope())
    return stack


def set_random_seed(seed):
    """`keras.utils.set_random_seed` (Python, NumPy, Keras, the backend) without TensorFlow on JAX or PyTorch.

    Keras also seeds TensorFlow wherever it is installed, for `tf.data`, which this project does not use off it.
    """
    if BACKEND == "tensorflow" or "tensorflow" in sys.modules:
        keras.utils.set_random_seed(seed)
        return
    sys.modules["tensorflow"] = None  # `import tensorflow` now fails: Keras skips it
    try:
        keras.utils.set_random_seed(seed)
    finally:
        del sys.modules["tensorflow"]


def enable_determinism(device):
    """Makes training repeatable on the CPU: TensorFlow's deterministic kernels, PyTorch's deterministic algorithms (JAX's CPU kernels are already)."""
    if BACKEND == "tensorflow":
        tf.config.experimental.enable_op_determinism()
    elif BACKEND == "torch":
        # A process-wide switch: off again for a GPU run in the same process.
        torch.use_deterministic_algorithms(device.startswith("cpu"))
