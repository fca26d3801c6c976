"""Tests for vae_keras.machine: the description names the CPU, the cores and the backend."""

import os

import keras

from vae_keras import machine
import pytest

# The quick subset for the edit-test loop: `pytest -m quick` (README).
pytestmark = pytest.mark.quick


def test_describe_machine_names_cpu_cores_backend_and_device():
    text = machine.describe_machine("cpu:0")
    lines = text.splitlines()
    assert lines[0] == f"CPU: {machine.cpu_model()}, {os.cpu_count()} cores"
    assert "Training device: cpu:0" in lines
    assert f"Keras {keras.__version__}, backend {keras.backend.backend()}" in lines[-1]


def test_describe_machine_without_device():
    assert "Training device" not in machine.describe_machine()


def test_cpu_model_reads_proc_cpuinfo():
    model = machine.cpu_model()
    assert isinstance(model, str) and model
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        if names:
            assert model == names[0]
