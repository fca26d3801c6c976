"""Tests for the conditional VAE (`ConditionalVAE`, `VAEConfig(conditional=True)`): the digit's wiring, training, generating, saving.

Run on every backend (see `tests/test_backends.py`'s BACKEND_TEST_FILES).
"""

import numpy as np
import pytest
from keras import ops

import vae_keras
from vae_keras import VAE, ConditionalVAE, VAEConfig, training
from vae_keras.config import CONDITIONAL_MODEL_PATH
from vae_keras.data import EpochBatches

# The quick subset for the edit-test loop: `pytest -m quick` (README).
pytestmark = pytest.mark.quick


def one_hot(digits):
    return np.eye(10, dtype="float32")[np.asarray(digits)]


@pytest.fixture(scope="module")
def conditional_model():
    return ConditionalVAE(latent_dim=4, seed=0)


def test_the_digit_enters_the_encoder_as_ten_more_inputs_of_its_dense_layer(conditional_model, small_mnist):
    # Independent reference: one-hot digit d adds row (features + d) of the dense kernel.
    (x, _), _ = small_mnist
    encoder = conditional_model.encoder
    kernel = ops.convert_to_numpy(encoder.get_layer("fc_encoder").kernel)
    assert kernel.shape == (7 * 7 * 64 + 10, 8)
    features = 7 * 7 * 64
    three = ops.convert_to_numpy(encoder([x[:5], one_hot([3] * 5)]))
    eight = ops.convert_to_numpy(encoder([x[:5], one_hot([8] * 5)]))
    np.testing.assert_allclose(three - eight, np.tile(kernel[features + 3] - kernel[features + 8], (5, 1)), atol=1e-5)


def test_the_decoder_sees_the_code_and_the_digit_side_by_side(conditional_model):
    decoder = conditional_model.decoder
    assert decoder.get_layer("to_1x1").output.shape[1:] == (1, 1, 4 + 10)
    z = np.random.default_rng(0).standard_normal((3, 4)).astype("float32")
    by_hand = ops.convert_to_numpy(ops.sigmoid(decoder([z, one_hot([1, 5, 9])])))
    np.testing.assert_allclose(ops.convert_to_numpy(conditional_model.decode(z, np.array([1, 5, 9]))), by_hand, atol=1e-6)
    other = ops.convert_to_numpy(conditional_model.decode(z, np.array([2, 5, 0])))
    assert np.abs(other[0] - by_hand[0]).max() > 1e-4  # another digit, another image
    np.testing.assert_allclose(other[1], by_hand[1], atol=1e-6)


def test_a_conditional_step_on_this_backend_trains_and_evaluates_with_the_labels(small_mnist, tmp_path):
    (x_train, y_train), (x_test, y_test) = small_mnist
    config = VAEConfig(conditional=True, epochs=2, batch_size=128, train_size=512, test_size=128, latent_dim=8)
    result = vae_keras.train(config, output_dir=tmp_path / "run", data=small_mnist, verbose=0)
    history = result.history
    assert len(history["val_elbo"]) == 2 and np.all(np.isfinite(history["elbo"]))
    assert history["elbo"][1] < history["elbo"][0]
    np.testing.assert_allclose(
        np.add(history["reconstruction_loss"], history["kl_loss"]), history["elbo"], rtol=1e-4
    )
    loaded = vae_keras.load_vae(tmp_path / "run" / "vae.keras")
    assert type(loaded) is ConditionalVAE and "conditional" not in loaded.get_config()
    results = training.evaluate(loaded, x_test[:128], y_test[:128])
    # The evaluation draws other noise than the training run's: the same loss within a nat.
    assert abs(results["elbo"] - history["val_elbo"][-1]) < 1.0
    with pytest.raises(ValueError, match="needs the digits \\(labels\\)"):
        training.evaluate(loaded, x_test[:8])


def test_generate_draws_the_digit_asked_for_from_the_prior_codes(conditional_model):
    codes = conditional_model.prior_codes(6, seed=2)
    sevens = conditional_model.generate(6, seed=2, digit=7)
    np.testing.assert_allclose(sevens, ops.convert_to_numpy(conditional_model.decode(codes, np.full(6, 7))), atol=1e-6)
    cycled = conditional_model.generate(12, seed=2)
    np.testing.assert_array_equal(conditional_model.prior_labels(12), np.arange(12) % 10)
    mixed = conditional_model.generate(3, seed=1, digit=[4, 0, 4])
    assert mixed.shape == (3, 28, 28, 1) and cycled.shape == (12, 28, 28, 1)


@pytest.mark.parametrize(
    "digit, message",
    [(10, "from 0 to 9"), (-1, "from 0 to 9"), (2.5, "integer from 0 to 9"), (True, "integer from 0 to 9"),
     ([1, 2], "or 3 such integers")],
)
def test_generate_refuses_a_digit_outside_0_to_9(conditional_model, digit, message):
    with pytest.raises(ValueError, match=message):
        conditional_model.generate(3, digit=digit)


def test_a_digit_asked_of_an_unconditional_model_is_a_clear_error():
    with pytest.raises(ValueError, match="needs a conditional VAE"):
        VAE(latent_dim=2, seed=0).generate(4, digit=7)


def test_a_conditional_model_without_labels_says_what_it_needs(conditional_model, small_mnist):
    (x, _), _ = small_mnist
    with pytest.raises(ValueError, match="needs the digits \\(labels=...\\)"):
        conditional_model.encode(x[:2])
    with pytest.raises(ValueError, match="feed it \\(images, labels\\)"):
        conditional_model(x[:2])


def test_the_reference_models_config_is_unchanged_and_the_shipped_conditional_file_loads_as_the_subclass():
    assert "conditional" not in VAE(latent_dim=2, seed=0).get_config()
    assert type(vae_keras.load_vae()) is VAE
    # Saved before the subclass existed, as a "VAE" with "conditional": true.
    shipped = vae_keras.load_vae(CONDITIONAL_MODEL_PATH)
    assert type(shipped) is ConditionalVAE and shipped.latent_dim == 20
    assert shipped.generate(2, seed=0, digit=3).shape == (2, 28, 28, 1)


def test_epoch_batches_keep_each_label_with_its_image_when_shuffled(small_mnist):
    (x, y), _ = small_mnist
    batches = EpochBatches(x, 100, epochs=2, shuffle=True, seed=3, labels=y)
    for index in (0, 13):
        ((images, labels),) = batches[index]
        order = batches.order(index // batches.steps)
        step = index % batches.steps
        rows = order[step * 100 : (step + 1) * 100]
        np.testing.assert_array_equal(images, x[rows])
        np.testing.assert_array_equal(labels, y[rows])
    with pytest.raises(ValueError, match="one label per image"):
        EpochBatches(x, 100, epochs=1, labels=y[:10])
