"""Starting Keras: the chosen backend, without TensorFlow's C++ start-up lines on screen."""

import contextlib
import importlib
import os
import sys

from vae_keras.checks import check_choice

# TensorFlow's C++ log lines, read when TensorFlow is first imported: "3" hides
# them all, so that a notebook shows no "failed call to cuInit" (the CUDA probe
# on a machine without a GPU) nor "NodeDef mentions attribute
# use_unbounded_threadpool" (a harmless tf.data version notice), both logged as
# errors. Python exceptions and warnings are unaffected, and `select_device`
# says plainly whether a GPU is used. Set TF_CPP_MIN_LOG_LEVEL yourself to see them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The Keras backends this project runs on.
BACKENDS = ("tensorflow", "jax", "torch")


def import_keras(backend=None):
    """Imports Keras once, on `backend` if given, and returns the module.

    Args:
        backend: "tensorflow", "jax", "torch" or None. None leaves the choice to
            Keras: the `KERAS_BACKEND` environment variable, else
            `~/.keras/keras.json`, else TensorFlow.

    Returns:
        The `keras` module.

    Raises:
        ValueError: when `backend` is unknown, or Keras is already running on
            another backend (the backend is fixed when Keras is first imported).
    """
    if backend is not None:
        check_choice("backend", backend, BACKENDS)
        if "keras" in sys.modules:
            running = sys.modules["keras"].backend.backend()
            if running != backend:
                raise ValueError(
                    f"Keras is already running on {running!r}; the backend is chosen "
                    f"before Keras is first imported (set KERAS_BACKEND={backend} "
                    "before starting Python, or restart the kernel)."
                )
        os.environ["KERAS_BACKEND"] = backend
    if "keras" not in sys.modules:
        # TensorFlow prints oneDNN and CUDA notices from C++ on import and at
        # its first look for a GPU, before its log level applies.
        with quiet_stderr():
            keras = importlib.import_module("keras")
            if keras.backend.backend() == "tensorflow":
                importlib.import_module("tensorflow").config.list_physical_devices("GPU")
    return sys.modules["keras"]


@contextlib.contextmanager
def quiet_stderr():
    """Sends file descriptor 2 to /dev/null for a moment: C++ logs bypass Python's `sys.stderr`."""
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
