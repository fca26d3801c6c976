"""vae_keras: MathWorks' "Train Variational Autoencoder (VAE) to Generate Images" in Keras 3."""

import os

# The VAE's train_step is written for TensorFlow (the project's default backend);
# set it before Keras is first imported, unless the user chose another one.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Keep TensorFlow's C++ start-up notices (CUDA probing, CPU features) out of the output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from vae_keras.classifier import build_classifier, load_classifier, train_classifier  # noqa: E402
from vae_keras.config import VAEConfig, quick_run  # noqa: E402
from vae_keras.data import (  # noqa: E402
    DEFAULT_DATA_DIR,
    DataError,
    MissingDataError,
    load_mnist,
    read_idx,
    write_idx,
)
from vae_keras.layers import Sampling  # noqa: E402
from vae_keras.losses import elbo_loss, kl_loss, reconstruction_loss  # noqa: E402
from vae_keras.metrics import ELBO  # noqa: E402
from vae_keras.models import PRETRAINED_MODEL_PATH, VAE, build_decoder, build_encoder, load_vae  # noqa: E402
from vae_keras.quality import (  # noqa: E402
    QualityReport,
    class_histogram,
    classifier_score,
    format_report,
    frechet_distance,
    histogram_entropy,
    quality_report,
    reconstruction_agreement,
)
from vae_keras.training import TrainingResult, evaluate, read_history, select_device, train  # noqa: E402

__version__ = "0.1.0"
