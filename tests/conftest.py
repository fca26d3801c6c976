"""Shared fixtures: a small, fixed slice of the real MNIST data."""

import numpy as np
import pytest

import vae_keras

# The backend under test: KERAS_BACKEND as Keras reads it (TensorFlow by
# default); tests/test_backends.py runs these tests again on JAX and PyTorch.
import keras  # noqa: E402 (after vae_keras, which starts it without TensorFlow's C++ lines)
from keras import ops  # noqa: E402


@pytest.fixture
def gradients():
    """A function computing gradients with the active backend's autodiff."""
    return backend_gradients


def backend_gradients(function, inputs):
    """Gradients of sum(function(*inputs)) with respect to each input, on the active backend.

    Returns:
        `(list of NumPy gradients, NumPy value of function(*inputs))`.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        variables = [tf.Variable(x) for x in inputs]
        with tf.GradientTape() as tape:
            value = function(*variables)
            total = tf.reduce_sum(value)
        return [g.numpy() for g in tape.gradient(total, variables)], ops.convert_to_numpy(value)
    if backend == "jax":
        import jax

        def total(*args):
            with keras.StatelessScope():  # random layers advance their seed inside
                value = function(*args)
            return ops.sum(value), value

        (_, value), grads = jax.value_and_grad(total, argnums=tuple(range(len(inputs))), has_aux=True)(*inputs)
        return [np.asarray(g) for g in grads], np.asarray(value)
    import torch

    tensors = [torch.tensor(x, requires_grad=True) for x in inputs]
    value = function(*tensors)
    value.sum().backward()
    return [t.grad.numpy() for t in tensors], value.detach().numpy()


@pytest.fixture(scope="session")
def mnist():
    """The full MNIST arrays, read once per test session."""
    return vae_keras.load_mnist()


@pytest.fixture(scope="session")
def small_mnist(mnist):
    """1,024 training and 256 test images with their labels."""
    (x_train, y_train), (x_test, y_test) = mnist
    return (x_train[:1024], y_train[:1024]), (x_test[:256], y_test[:256])
