"""Tests for the pretrained model that ships in models/: it loads, it is the reference, it is trained."""

import numpy as np
import pytest

import vae_keras
from vae_keras import config, run_folder, training

HISTORY = config.PRETRAINED_HISTORY_PATH


@pytest.fixture(scope="module")
def pretrained():
    return vae_keras.load_vae()  # no argument: models/vae_mnist.keras


def count_trainable(model):
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


def test_pretrained_model_has_the_reference_architecture(pretrained):
    assert isinstance(pretrained, vae_keras.VAE)
    assert pretrained.latent_dim == 20
    assert count_trainable(pretrained.encoder) == 144_296
    assert count_trainable(pretrained.decoder) == 118_465
    reference = vae_keras.VAE(latent_dim=20)
    assert [w.shape for w in pretrained.get_weights()] == [w.shape for w in reference.get_weights()]


def test_pretrained_model_is_trained(pretrained, mnist):
    (_, _), (x_test, _) = mnist
    results = training.evaluate(pretrained, x_test[:2000])
    assert np.isfinite(results["elbo"])
    # An untrained model scores about 52; the reference reaches 18.51 after 50 epochs.
    assert 15.0 < results["elbo"] < 21.0, results
    assert 3.0 < results["kl_loss"] < 12.0, results


def test_pretrained_history_matches_the_reference_protocol():
    history = run_folder.read_history(HISTORY)
    assert history["epoch"] == list(range(1, 51))
    assert all(np.isfinite(history["val_elbo"]))
    # Within a few tenths of the reference at the end, as a reproduction should be.
    assert abs(history["val_elbo"][-1] - config.REFERENCE_TEST_ELBO[-1]) < 0.5
    assert history["val_elbo"][-1] < history["val_elbo"][0] - 5
