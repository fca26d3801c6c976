"""vae_keras: MathWorks' "Train Variational Autoencoder (VAE) to Generate Images" in Keras 3.

`import vae_keras` imports Keras, like any Keras library, and registers the
package's classes, so `keras.saving.load_model` reads every `.keras` file the
project writes. Keras' backend is chosen before that, with the environment
variable `KERAS_BACKEND` (tensorflow, jax or torch; TensorFlow by default).
"""

from vae_keras.backends import BACKEND, select_device
from vae_keras.callbacks import DecodedSamples, EpochCheckpoint, TrainingMonitor
from vae_keras.classifier import build_classifier, load_classifier, train_classifier
from vae_keras.config import (
    CLASSIFIER_PATH,
    DEFAULT_DATA_DIR,
    PRETRAINED_MODEL_PATH,
    REFERENCE_TEST_ELBO,
    VAEConfig,
    quick_run,
)
from vae_keras.data import DataError, EpochBatches, MissingDataError, load_mnist, read_idx
from vae_keras.layers import Sampling
from vae_keras.losses import elbo_loss, kl_loss, loss_terms, reconstruction_loss
from vae_keras.metrics import ELBO
from vae_keras.models import VAE, build_decoder, build_encoder, load_vae
from vae_keras.quality import (
    QualityReport,
    class_histogram,
    classifier_score,
    format_report,
    frechet_distance,
    histogram_entropy,
    quality_report,
    reconstruction_agreement,
)
from vae_keras.records import read_history
from vae_keras.training import TrainingDiverged, TrainingResult, build_run, evaluate, train

__version__ = "0.1.0"

__all__ = [
    "BACKEND",
    "CLASSIFIER_PATH",
    "DEFAULT_DATA_DIR",
    "DataError",
    "DecodedSamples",
    "ELBO",
    "EpochBatches",
    "EpochCheckpoint",
    "MissingDataError",
    "PRETRAINED_MODEL_PATH",
    "QualityReport",
    "REFERENCE_TEST_ELBO",
    "Sampling",
    "TrainingDiverged",
    "TrainingMonitor",
    "TrainingResult",
    "VAE",
    "VAEConfig",
    "build_classifier",
    "build_decoder",
    "build_encoder",
    "build_run",
    "class_histogram",
    "classifier_score",
    "elbo_loss",
    "evaluate",
    "format_report",
    "frechet_distance",
    "histogram_entropy",
    "kl_loss",
    "load_classifier",
    "load_mnist",
    "load_vae",
    "loss_terms",
    "quality_report",
    "quick_run",
    "read_history",
    "read_idx",
    "reconstruction_agreement",
    "reconstruction_loss",
    "select_device",
    "train",
    "train_classifier",
]
