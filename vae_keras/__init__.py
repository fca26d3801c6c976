"""vae_keras: MathWorks' "Train Variational Autoencoder (VAE) to Generate Images" in Keras 3.

`import vae_keras` imports Keras (its backend chosen before, with `KERAS_BACKEND`: tensorflow by default, jax or torch)
and registers the package's classes, so `keras.saving.load_model` reads the project's `.keras` files. The core:
`models.py` (the networks, `VAE`'s train steps), `layers.py` (sampling), `losses.py` (the ELBO), `metrics.py`.
"""

from vae_keras.backends import BACKEND, select_device
from vae_keras.classifier import load_classifier, train_classifier
from vae_keras.config import DEFAULT_DATA_DIR, PRETRAINED_MODEL_PATH, REFERENCE_TEST_ELBO, VAEConfig, quick_run
from vae_keras.data import DataError, MissingDataError, load_mnist, read_idx
from vae_keras.images import load_images, read_images
from vae_keras.layers import Sampling
from vae_keras.losses import elbo_loss, kl_loss, loss_terms, reconstruction_loss
from vae_keras.metrics import ELBO
from vae_keras.models import VAE, ConditionalVAE, build_decoder, build_encoder, load_vae, network_plan
from vae_keras.plotting import DecodedSamples
from vae_keras.quality import format_report, quality_report
from vae_keras.run_folder import read_history
from vae_keras.training import TrainingDiverged, TrainingResult, evaluate, train

__version__ = "0.1.0"

__all__ = [  # alphabetical
    "BACKEND", "ConditionalVAE", "DEFAULT_DATA_DIR", "DataError", "DecodedSamples", "ELBO", "MissingDataError",
    "PRETRAINED_MODEL_PATH", "REFERENCE_TEST_ELBO", "Sampling", "TrainingDiverged", "TrainingResult", "VAE",
    "VAEConfig", "build_decoder", "build_encoder", "elbo_loss", "evaluate", "format_report", "kl_loss",
    "load_classifier", "load_images", "load_mnist", "load_vae", "loss_terms", "network_plan", "quality_report",
    "quick_run", "read_history", "read_idx", "read_images", "reconstruction_loss", "select_device", "train",
    "train_classifier",
]
