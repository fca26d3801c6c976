"""vae_keras: MathWorks' "Train Variational Autoencoder (VAE) to Generate Images" in Keras 3.

`import vae_keras` is light: Keras (and with it the backend, TensorFlow by
default) is imported when a name that needs it is first used, so that the
backend can still be chosen first (`python -m vae_keras --backend jax ...`,
or `KERAS_BACKEND`).
"""

import importlib

from vae_keras.config import VAEConfig, quick_run
from vae_keras.startup import import_keras

__version__ = "0.1.0"

# Public name -> the module that defines it (imported on first use).
_LAZY = {
    "DEFAULT_DATA_DIR": "data", "DataError": "data", "MissingDataError": "data",
    "load_mnist": "data", "read_idx": "data",
    "Sampling": "layers",
    "elbo_loss": "losses", "kl_loss": "losses", "loss_terms": "losses", "reconstruction_loss": "losses",
    "ELBO": "metrics",
    "PRETRAINED_MODEL_PATH": "records", "VAE": "models", "build_decoder": "models",
    "build_encoder": "models", "load_vae": "models",
    "REFERENCE_TEST_ELBO": "records", "read_history": "records",
    "TrainingResult": "training", "build_run": "training", "evaluate": "training",
    "select_device": "training", "train": "training",
    "build_classifier": "classifier", "load_classifier": "classifier", "train_classifier": "classifier",
    "QualityReport": "quality", "class_histogram": "quality", "classifier_score": "quality",
    "format_report": "quality", "frechet_distance": "quality", "histogram_entropy": "quality",
    "quality_report": "quality", "reconstruction_agreement": "quality",
}  # fmt: skip
_SUBMODULES = {
    "analysis", "backends", "callbacks", "checks", "classifier", "config", "data", "layers", "losses",
    "machine", "metrics", "models", "plotting", "quality", "records", "training",
}

# Modules that do not import Keras: reaching them leaves the backend unchosen.
_WITHOUT_KERAS = {"checks", "config", "records", "startup"}

__all__ = ["VAEConfig", "import_keras", "quick_run", *_LAZY]


def __getattr__(name):
    if name in _LAZY or name in _SUBMODULES:
        module_name = _LAZY.get(name, name)
        if module_name not in _WITHOUT_KERAS:
            import_keras()
        module = importlib.import_module(f"vae_keras.{module_name}")
        value = getattr(module, name) if name in _LAZY else module
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vae_keras' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY, *_SUBMODULES})
