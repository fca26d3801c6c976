"""Root pytest configuration: notebooks executed by nbmake run their short version."""

import os

# Read once, by vae_keras.config.quick_run(); the notebook kernels inherit it.
os.environ.setdefault("VAE_KERAS_QUICK", "1")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("MPLBACKEND", "Agg")
