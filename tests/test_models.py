"""Tests for the encoder, decoder and VAE: architecture, loss, training steps, saving."""

import keras
import numpy as np
import pytest
from keras import ops

import vae_keras
from vae_keras import VAE, build_decoder, build_encoder, training

# The quick subset for the edit-test loop: `pytest -m quick` (README).
pytestmark = pytest.mark.quick


def count_trainable(model):
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


def test_encoder_parameters_and_shapes():
    encoder = build_encoder(20)
    assert count_trainable(encoder) == 144_296
    # conv 3x3x1x32 + 32, conv 3x3x32x64 + 64, dense 7*7*64 x 40 + 40.
    assert count_trainable(encoder) == (9 * 32 + 32) + (9 * 32 * 64 + 64) + (7 * 7 * 64 * 40 + 40)
    shapes = [tuple(layer.output.shape[1:]) for layer in encoder.layers[1:]]
    assert shapes == [(14, 14, 32), (7, 7, 64), (3136,), (40,)]


def test_decoder_parameters_and_shapes():
    decoder = build_decoder(20)
    assert count_trainable(decoder) == 118_465
    shapes = [tuple(layer.output.shape[1:]) for layer in decoder.layers[1:]]
    assert shapes == [(1, 1, 20), (7, 7, 64), (14, 14, 64), (28, 28, 32), (28, 28, 1)]
    assert decoder.layers[-1].activation is keras.activations.linear


def test_latent_dim_changes_sizes():
    model = VAE(latent_dim=3, seed=0)
    assert model.latent_dim == 3
    z_mean, z_log_var = model.encode(np.zeros((2, 28, 28, 1), "float32"))
    assert tuple(z_mean.shape) == (2, 3) == tuple(z_log_var.shape)


@pytest.mark.parametrize("latent_dim", [0, -1, 1.5, "20"])
def test_invalid_latent_dim(latent_dim):
    with pytest.raises(ValueError, match=f"latent_dim={latent_dim!r}"):
        vae_keras.VAEConfig(latent_dim=latent_dim)


def test_mismatched_encoder_and_decoder():
    with pytest.raises(ValueError, match="size 5"):
        VAE(encoder=build_encoder(20), decoder=build_decoder(5))


def test_encode_splits_means_and_log_variances():
    model = VAE(seed=0)
    x = np.random.default_rng(0).random((3, 28, 28, 1)).astype("float32")
    raw = ops.convert_to_numpy(model.encoder(x))
    z_mean, z_log_var = model.encode(x)
    np.testing.assert_array_equal(ops.convert_to_numpy(z_mean), raw[:, :20])
    np.testing.assert_array_equal(ops.convert_to_numpy(z_log_var), raw[:, 20:])


def test_decode_and_generate_are_images():
    model = VAE(seed=0)
    images = model.generate(6, seed=4)
    assert images.shape == (6, 28, 28, 1) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    np.testing.assert_array_equal(images, model.generate(6, seed=4))
    assert not np.array_equal(images, model.generate(6, seed=5))
    # decode is the sigmoid of the decoder's logits.
    z = np.random.default_rng(4).standard_normal((6, 20)).astype("float32")
    logits = ops.convert_to_numpy(model.decoder(z))
    np.testing.assert_allclose(images, 1 / (1 + np.exp(-logits)), rtol=1e-5, atol=1e-6)


def test_generate_decodes_in_batches(monkeypatch):
    model = VAE(seed=0)
    whole = model.generate(10, seed=3)
    sizes = []
    decode = VAE.decode

    def counting(self, z, training=False):
        sizes.append(len(z))
        return decode(self, z, training=training)

    monkeypatch.setattr(VAE, "decode", counting)
    batched = model.generate(10, seed=3, batch_size=3)
    assert sizes == [3, 3, 3, 1]  # memory bounded by the batch, whatever n
    np.testing.assert_allclose(batched, whole, atol=1e-6)  # the same codes
    with pytest.raises(ValueError, match="batch_size=0"):
        model.generate(4, batch_size=0)


@pytest.mark.parametrize("n", [0, -2, 2.5, True])
def test_generate_rejects_bad_n(n):
    with pytest.raises(ValueError, match="n must be"):
        VAE(seed=0).generate(n)


def numpy_elbo(model, x, eps):
    """ELBO loss of `x` with the given noise, computed with NumPy from the model's codes."""
    raw = ops.convert_to_numpy(model.encoder(x)).astype("float64")
    mean, log_var = raw[:, :20], raw[:, 20:]
    z = (mean + eps * np.exp(0.5 * log_var)).astype("float32")
    logits = ops.convert_to_numpy(model.decoder(z)).astype("float64")
    x_pred = 1 / (1 + np.exp(-logits))
    reconstruction = (0.5 * (x_pred - x) ** 2).reshape(len(x), -1).sum(axis=1)
    kl = -0.5 * (1 + log_var - mean**2 - np.exp(log_var)).sum(axis=1)
    return reconstruction.mean(), kl.mean()


def test_evaluate_matches_numpy_elbo(small_mnist):
    (_, _), (x_test, _) = small_mnist
    model = VAE(seed=0)
    model.compile(optimizer=keras.optimizers.Adam())
    # Replay the noise the sampling layer will draw: one draw per batch, in order.
    state = ops.convert_to_numpy(model.sampling.seed_generator.state).copy()
    batch_size = 64
    noise = []
    replay = keras.random.SeedGenerator(0)
    replay.state.assign(state)
    for start in range(0, len(x_test), batch_size):
        count = min(batch_size, len(x_test) - start)
        noise.append(ops.convert_to_numpy(keras.random.normal((count, 20), seed=replay)))
    eps = np.concatenate(noise).astype("float64")
    results = training.evaluate(model, x_test, batch_size=batch_size)
    reconstruction, kl = numpy_elbo(model, x_test, eps)
    assert results["reconstruction_loss"] == pytest.approx(reconstruction, rel=1e-4)
    assert results["kl_loss"] == pytest.approx(kl, rel=1e-3, abs=1e-5)
    assert results["elbo"] == pytest.approx(reconstruction + kl, rel=1e-4)


def test_train_steps_lower_the_loss(small_mnist):
    (x_train, _), (x_test, _) = small_mnist
    vae_keras.backends.set_random_seed(0)
    model = training.build_model(vae_keras.VAEConfig(train_size=1024))
    before = training.evaluate(model, x_test)["elbo"]
    model.fit(x_train, batch_size=128, epochs=2, verbose=0)
    after = training.evaluate(model, x_test)["elbo"]
    assert np.isfinite(after)
    assert after < before - 20, (before, after)


def test_fit_reports_the_three_losses(small_mnist):
    (x_train, _), _ = small_mnist
    model = training.build_model(vae_keras.VAEConfig(train_size=1024))
    history = model.fit(x_train[:256], batch_size=128, epochs=1, verbose=0)
    logs = {name: values[-1] for name, values in history.history.items()}
    assert set(logs) == {"elbo", "reconstruction_loss", "kl_loss"}
    assert logs["elbo"] == pytest.approx(logs["reconstruction_loss"] + logs["kl_loss"], rel=1e-5)


def test_save_and_load_round_trip(tmp_path, small_mnist):
    (x_train, _), (x_test, _) = small_mnist
    model = training.build_model(vae_keras.VAEConfig(train_size=1024))
    model.fit(x_train[:256], batch_size=128, epochs=1, verbose=0)
    path = tmp_path / "vae.keras"
    model.save(path)

    restored = keras.saving.load_model(path)  # safe_mode stays on
    assert isinstance(restored, VAE)
    x = x_test[:16]
    np.testing.assert_allclose(
        ops.convert_to_numpy(restored.encoder(x)), ops.convert_to_numpy(model.encoder(x)), atol=1e-6
    )
    z = np.random.default_rng(0).standard_normal((4, 20)).astype("float32")
    np.testing.assert_allclose(
        ops.convert_to_numpy(restored.decode(z)), ops.convert_to_numpy(model.decode(z)), atol=1e-6
    )
    # The optimizer state came back too, so training continues where it was.
    assert int(restored.optimizer.iterations) == int(model.optimizer.iterations) == 2
    for saved, loaded in zip(model.optimizer.variables, restored.optimizer.variables):
        np.testing.assert_array_equal(ops.convert_to_numpy(saved), ops.convert_to_numpy(loaded))
    restored.fit(x_train[256:512], batch_size=128, epochs=1, verbose=0)
    assert int(restored.optimizer.iterations) == 4


def test_load_vae_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.keras"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        vae_keras.load_vae(missing)
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match=str(corrupt)) as error_info:
        vae_keras.load_vae(corrupt)
    assert "not a .keras model archive" in str(error_info.value)
    truncated = tmp_path / "truncated.keras"
    VAE(latent_dim=2, seed=0).save(tmp_path / "whole.keras")
    truncated.write_bytes((tmp_path / "whole.keras").read_bytes()[:5000])
    with pytest.raises(ValueError, match=str(truncated)):
        vae_keras.load_vae(truncated)
    other = tmp_path / "other.keras"
    build_encoder(2).save(other)
    with pytest.raises(ValueError, match="not a vae_keras VAE"):
        vae_keras.load_vae(other)


def test_mixed_bfloat16_computes_in_bfloat16_with_float32_weights_and_outputs(tmp_path):
    model = VAE(seed=0, precision="mixed_bfloat16")
    assert count_trainable(model.encoder) == 144_296
    assert count_trainable(model.decoder) == 118_465
    for layer in model.encoder.layers[1:] + model.decoder.layers[1:]:
        assert layer.compute_dtype == "bfloat16", layer.name
    assert {weight.dtype for weight in model.trainable_weights} == {"float32"}
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    z_mean, z_log_var = model.encode(x)
    images = model.decode(z_mean)
    dtypes = {keras.backend.standardize_dtype(t.dtype) for t in (z_mean, z_log_var, images)}
    assert dtypes == {"float32"}
    # The same weights in float32 give nearly the same codes: bfloat16 keeps
    # 8 bits of mantissa, so agreement is to about 1e-2, not to float32's 1e-6.
    reference = VAE(seed=0, precision="float32")
    reference.set_weights(model.get_weights())
    expected = ops.convert_to_numpy(reference.encode(x)[0])
    np.testing.assert_allclose(ops.convert_to_numpy(z_mean), expected, atol=0.05, rtol=0.05)
    assert not np.array_equal(ops.convert_to_numpy(z_mean), expected)

    path = tmp_path / "mixed.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.decoder.layers[-1].compute_dtype == "bfloat16"
    np.testing.assert_array_equal(
        ops.convert_to_numpy(restored.decode(z_mean)), ops.convert_to_numpy(images)
    )
