"""The other Keras backends: the unit tests again on JAX (and PyTorch where installed), no TensorFlow there, models across backends."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from keras import ops

import vae_keras
from vae_keras import backends

ROOT = Path(__file__).resolve().parent.parent
# Set in the child processes below, so that they do not start children of their own.
CHILD_ENV_VAR = "VAE_KERAS_BACKEND_CHILD"
# The unit tests whose code differs by backend: steps, layers, training, the shipped model.
BACKEND_TEST_FILES = [
    "tests/test_layers.py", "tests/test_losses.py", "tests/test_metrics.py",
    "tests/test_models.py", "tests/test_training.py", "tests/test_pretrained.py", "tests/test_conditional.py",
]

pytestmark = pytest.mark.skipif(
    os.environ.get(CHILD_ENV_VAR) == "1", reason="already a child run on another backend"
)


def installed(backend):
    return importlib.util.find_spec({"jax": "jax", "torch": "torch", "tensorflow": "tensorflow"}[backend]) is not None


def needs(backend):
    reasons = {
        "jax": "JAX is not installed (pip install -r requirements.txt installs its CPU build)",
        "torch": "PyTorch is not installed: it is optional, its default wheel is several GB "
        "(pip install torch to run the tests on the PyTorch backend)",
    }
    return pytest.mark.skipif(not installed(backend), reason=reasons[backend])


def run_on(backend, args, extra_env=None, timeout=1200):
    """Runs `python ARGS` with KERAS_BACKEND=backend in the project folder; returns the process."""
    env = {**os.environ, "KERAS_BACKEND": backend, CHILD_ENV_VAR: "1", **(extra_env or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def run_script(backend, script, extra_env=None):
    """Runs a Python script on `backend` and returns the JSON object it prints last."""
    process = run_on(backend, ["-c", textwrap.dedent(script)], extra_env)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("backend", [pytest.param("jax", marks=needs("jax")), pytest.param("torch", marks=needs("torch"))])
def test_unit_tests_pass_on_backend(backend):
    process = run_on(backend, [
        "-m", "pytest", "-q", "-p", "no:nbmake", "-o", "addopts=", "-p", "no:cacheprovider",
        "-m", "not slow_off_tensorflow", *BACKEND_TEST_FILES,
    ])
    assert process.returncode == 0, process.stdout[-5000:] + process.stderr[-2000:]
    assert " passed" in process.stdout and " failed" not in process.stdout


NO_TENSORFLOW_SCRIPT = """
    import json, sys
    import vae_keras
    from vae_keras.__main__ import main
    from vae_keras import plotting

    assert vae_keras.backends.BACKEND == "jax"
    (x_train, y_train), (x_test, y_test) = vae_keras.load_mnist()
    data = ((x_train[:256], y_train[:256]), (x_test[:128], y_test[:128]))
    config = vae_keras.VAEConfig(epochs=1, batch_size=128, train_size=256, test_size=128)
    result = vae_keras.train(config, output_dir=sys.argv[1] + "/run", data=data, verbose=0)
    model = vae_keras.load_vae(result.output_dir / "vae.keras")
    images = model.generate(4, seed=0)
    plotting.plot_reconstructions(model, x_test[:200], y_test[:200], seed=0, path=sys.argv[1] + "/r.png")
    status = main(["evaluate", "--test-size", "64"])
    modules = sorted(name for name in sys.modules if name.split(".")[0] == "tensorflow")
    print(json.dumps({"status": status, "modules": modules, "shape": list(images.shape),
                      "val_elbo": result.history["val_elbo"]}))
"""


@needs("jax")
def test_no_tensorflow_module_is_imported_under_jax(tmp_path):
    out = run_script("jax", NO_TENSORFLOW_SCRIPT.replace("sys.argv[1]", repr(str(tmp_path))))
    assert out["modules"] == []
    assert out["status"] == 0 and out["shape"] == [4, 28, 28, 1]
    assert len(out["val_elbo"]) == 1 and np.isfinite(out["val_elbo"][0])


LOAD_SHIPPED_SCRIPT = """
    import json
    from pathlib import Path
    import keras, vae_keras  # nothing else first: the import registers the package's classes

    loaded = {}
    for path in sorted(Path(vae_keras.PRETRAINED_MODEL_PATH).parent.glob("*.keras")):
        model = keras.saving.load_model(path)
        again = keras.models.load_model(path)
        loaded[path.name] = [type(model).__name__, type(again).__name__, model.count_params()]
    print(json.dumps({"backend": keras.backend.backend(), "loaded": loaded}))
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_every_shipped_keras_file_loads_with_plain_keras_after_import_vae_keras(backend):
    if not installed(backend):
        pytest.skip(f"{backend} is not installed")
    out = run_script(backend, LOAD_SHIPPED_SCRIPT)
    assert out["backend"] == backend
    shipped = sorted(path.name for path in (ROOT / "models").glob("*.keras"))
    assert sorted(out["loaded"]) == shipped and len(shipped) >= 4
    for name, (first, second, params) in out["loaded"].items():
        expected = {"digit_classifier.keras": "Functional", "vae_mnist_conditional.keras": "ConditionalVAE"}.get(name, "VAE")
        assert first == second == expected, (name, first, second)
        assert params > 50_000  # the 2-D model has 93,381
    assert out["loaded"]["vae_mnist.keras"][2] == 144_296 + 118_465  # the reference encoder and decoder


def test_the_command_line_runs_on_the_backend_keras_backend_names():
    backend = "jax" if installed("jax") else "tensorflow"
    process = run_on(backend, ["-m", "vae_keras", "evaluate", "--test-size", "32"], timeout=600)
    assert process.returncode == 0, process.stderr[-2000:]
    assert "Test ELBO loss = " in process.stdout
    help_text = run_on(backend, ["-m", "vae_keras", "--help"]).stdout
    assert f"Keras backend: {backend}." in help_text and "KERAS_BACKEND" in help_text


def test_a_backend_vae_keras_does_not_run_on_is_a_clear_error():
    process = run_on("numpy", ["-c", "import vae_keras"])
    assert process.returncode != 0
    assert "Set KERAS_BACKEND to one of those" in process.stderr and "'numpy'" in process.stderr


EVALUATE_SCRIPT = """
    import json
    import vae_keras
    (_, _), (x_test, _) = vae_keras.load_mnist()
    model = vae_keras.load_vae()
    model.sampling.reseed(0)
    print(json.dumps(vae_keras.evaluate(model, x_test[:2000])))
"""


@pytest.mark.parametrize("backend", [pytest.param("jax", marks=needs("jax")), pytest.param("torch", marks=needs("torch"))])
def test_pretrained_model_gives_the_same_test_elbo_on_each_backend(backend, mnist):
    (_, _), (x_test, _) = mnist
    here = vae_keras.evaluate(vae_keras.load_vae(), x_test[:2000])
    there = run_script(backend, EVALUATE_SCRIPT)
    # The backends draw different noise; 2,000 images average it to about +-0.05.
    assert there["elbo"] == pytest.approx(here["elbo"], abs=0.15)
    assert there["kl_loss"] == pytest.approx(here["kl_loss"], abs=0.02)  # the KL needs no noise


TRAIN_ELSEWHERE_SCRIPT = """
    import json, sys
    import numpy as np
    import vae_keras
    (x_train, y_train), (x_test, y_test) = vae_keras.load_mnist()
    data = ((x_train[:256], y_train[:256]), (x_test[:64], y_test[:64]))
    config = vae_keras.VAEConfig(epochs=1, batch_size=128, train_size=256, test_size=64)
    result = vae_keras.train(config, output_dir=OUT, data=data, verbose=0)
    codes = vae_keras.load_vae(result.output_dir / "vae.keras").encoder(x_test[:8])
    np.save(OUT + "/codes.npy", np.asarray(codes))
    print(json.dumps({"iterations": int(result.model.optimizer.iterations)}))
"""


@needs("jax")
def test_model_trained_on_jax_loads_and_keeps_training_here(tmp_path, small_mnist):
    out = run_script("jax", TRAIN_ELSEWHERE_SCRIPT.replace("OUT", repr(str(tmp_path))))
    assert out["iterations"] == 2
    model = vae_keras.load_vae(tmp_path / "vae.keras")
    (x_train, _), (x_test, _) = small_mnist
    np.testing.assert_allclose(
        ops.convert_to_numpy(model.encoder(x_test[:8])), np.load(tmp_path / "codes.npy"), atol=1e-4
    )
    before = vae_keras.evaluate(model, x_test)["elbo"]
    model.fit(x_train[:512], batch_size=128, epochs=2, verbose=0)
    assert int(model.optimizer.iterations) == 2 + 8  # Adam's state came along
    assert vae_keras.evaluate(model, x_test)["elbo"] < before


DATA_PARALLEL_SCRIPT = """
    import json
    import vae_keras
    (x_train, y_train), (x_test, y_test) = vae_keras.load_mnist()
    data = ((x_train[:1024], y_train[:1024]), (x_test[:512], y_test[:512]))
    config = vae_keras.VAEConfig(epochs=2, batch_size=128, train_size=1024, test_size=512,
                                 eval_batch_size=256, data_parallel=DATA_PARALLEL)
    result = vae_keras.train(config, output_dir=OUT, data=data, verbose=1)
    print(json.dumps({"val_elbo": result.history["val_elbo"]}))
"""


@needs("jax")
def test_data_parallel_over_two_cpu_devices_matches_one_device(tmp_path):
    two = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    process = run_on(
        "jax", ["-c", textwrap.dedent(DATA_PARALLEL_SCRIPT.replace("DATA_PARALLEL", "'auto'").replace("OUT", repr(str(tmp_path / "two"))))], two
    )
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    assert "data parallel over 2 devices" in process.stdout
    parallel = json.loads(process.stdout.strip().splitlines()[-1])["val_elbo"]
    single = run_script("jax", DATA_PARALLEL_SCRIPT.replace("DATA_PARALLEL", "False").replace("OUT", repr(str(tmp_path / "one"))), two)["val_elbo"]
    # Same data, same weights at the start; only the noise and the sums' order differ.
    assert parallel[-1] == pytest.approx(single[-1], abs=1.5), (parallel, single)
    assert parallel[-1] < parallel[0]


def test_select_device_auto_without_gpu(monkeypatch, capsys):
    monkeypatch.setattr(backends, "visible_gpus", lambda: [])
    assert backends.select_device("auto") == "cpu:0"
    assert "CPU" in capsys.readouterr().out


def test_select_device_auto_with_gpu(monkeypatch, capsys):
    monkeypatch.setattr(backends, "visible_gpus", lambda: ["/physical_device:GPU:0"])
    assert backends.select_device("auto") == "gpu:0"
    assert "GPU" in capsys.readouterr().out


def test_select_device_cpu_forced_even_with_gpu(monkeypatch):
    monkeypatch.setattr(backends, "visible_gpus", lambda: ["/physical_device:GPU:0"])
    assert backends.select_device("cpu", verbose=False) == "cpu:0"


def test_select_device_gpu_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(backends, "visible_gpus", lambda: [])
    with pytest.raises(RuntimeError, match="sees no GPU"):
        backends.select_device("gpu")


def test_select_device_unknown():
    with pytest.raises(ValueError, match="'tpu'"):
        backends.select_device("tpu")
