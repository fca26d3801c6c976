"""Root pytest configuration: notebooks executed by nbmake run their short version."""

import os

# Read once, by vae_keras.config.quick_run(); the notebook kernels inherit it.
os.environ.setdefault("VAE_KERAS_QUICK", "1")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("MPLBACKEND", "Agg")
# The test workers (pytest-xdist) and the backend children share one GPU where there is one: each takes the
# memory it uses, not all of it as TensorFlow and JAX do by default.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
