"""Tests for vae_keras.metrics: the ELBO metric."""

import pytest

from vae_keras import ELBO

# The quick subset for the edit-test loop: `pytest -m quick` (README).
pytestmark = pytest.mark.quick


def test_elbo_metric_weights_batches_by_size():
    metric = ELBO()
    metric.update_state([10.0 + 1.0, 20.0 + 3.0])
    metric.update_state([4.0 + 0.0])
    assert float(metric.result()) == pytest.approx((11 + 23 + 4) / 3)
    metric.reset_state()
    assert float(metric.result()) == 0.0
    metric.update_state([2.0, 8.0], sample_weight=[3.0, 1.0])
    assert float(metric.result()) == pytest.approx((6 + 8) / 4)


def test_elbo_metric_serializes():
    metric = ELBO(name="test_elbo")
    restored = ELBO.from_config(metric.get_config())
    assert restored.name == "test_elbo"
