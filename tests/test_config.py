"""Tests for VAEConfig: the reference defaults and the checks of each field."""

import dataclasses

import pytest

from vae_keras import VAEConfig

# The quick subset for the edit-test loop: `pytest -m quick` (README).
pytestmark = pytest.mark.quick


def test_defaults_are_the_reference_settings():
    config = VAEConfig()
    assert config.latent_dim == 20
    assert config.batch_size == 512
    assert config.epochs == 50
    assert config.learning_rate == 1e-3
    assert config.execution_environment == "auto"
    assert config.shuffle is False
    assert config.precision == "float32"
    assert config.steps_per_epoch() == 117 == 60_000 // 512


def test_steps_per_epoch_follows_train_size():
    assert VAEConfig(train_size=1024, batch_size=100).steps_per_epoch() == 10


def test_replace_keeps_checks():
    config = dataclasses.replace(VAEConfig(), epochs=3)
    assert config.epochs == 3
    with pytest.raises(ValueError, match="epochs"):
        dataclasses.replace(config, epochs=0)


@pytest.mark.parametrize(
    "field, value",
    [
        ("latent_dim", 0),
        ("latent_dim", -3),
        ("latent_dim", 2.5),
        ("latent_dim", 785),
        ("beta", -1.0),
        ("beta", float("nan")),
        ("kl_warmup_epochs", -1),
        ("likelihood", "poisson"),
        ("batch_size", 0),
        ("batch_size", 60_001),
        ("epochs", 0),
        ("epochs", True),
        ("learning_rate", 0),
        ("learning_rate", -1e-3),
        ("learning_rate", float("nan")),
        ("learning_rate", "0.001"),
        ("adam_epsilon", 0),
        ("execution_environment", "tpu"),
        ("execution_environment", "GPU"),
        ("seed", -1),
        ("shuffle", "yes"),
        ("train_size", 0),
        ("train_size", 70_000),
        ("test_size", 0),
        ("eval_batch_size", 0),
        ("jit_compile", "maybe"),
        ("steps_per_execution", 0),
        ("precision", "float16"),
        ("precision", "bfloat16"),
    ],
)
def test_invalid_value_names_field_and_value(field, value):
    with pytest.raises(ValueError) as error_info:
        VAEConfig(**{field: value})
    message = str(error_info.value)
    assert field in message
    assert repr(value) in message


def test_batch_size_larger_than_train_size():
    with pytest.raises(ValueError, match=r"batch_size=512"):
        VAEConfig(train_size=500)
