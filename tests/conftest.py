"""Shared fixtures: a small, fixed slice of the real MNIST data."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

import vae_keras  # noqa: E402


@pytest.fixture(scope="session")
def mnist():
    """The full MNIST arrays, read once per test session."""
    return vae_keras.load_mnist()


@pytest.fixture(scope="session")
def small_mnist(mnist):
    """1,024 training and 256 test images with their labels."""
    (x_train, y_train), (x_test, y_test) = mnist
    return (x_train[:1024], y_train[:1024]), (x_test[:256], y_test[:256])
