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

import vae_keras

keras = vae_keras.import_keras()
from keras import ops  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# Set in the child processes below, so that they do not start children of their own.
CHILD_ENV_VAR = "VAE_KERAS_BACKEND_CHILD"
# The unit tests whose code differs by backend: steps, layers, training, the shipped model.
BACKEND_TEST_FILES = ["tests/test_layers.py", "tests/test_models.py", "tests/test_training.py", "tests/test_pretrained.py"]

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


def test_cli_backend_flag_chooses_the_backend_before_keras_is_imported():
    backend = "jax" if installed("jax") else "tensorflow"
    script = f"""
        import json, sys
        from vae_keras.__main__ import main
        status = main(["--backend", "{backend}", "evaluate", "--test-size", "32"])
        import keras
        print(json.dumps({{"status": status, "backend": keras.backend.backend()}}))
    """
    out = run_script("tensorflow", script)  # KERAS_BACKEND says tensorflow: --backend wins
    assert out == {"status": 0, "backend": backend}


def test_import_keras_refuses_to_switch_a_running_backend():
    running = keras.backend.backend()
    other = "jax" if running != "jax" else "tensorflow"
    with pytest.raises(ValueError, match=f"already running on '{running}'"):
        vae_keras.import_keras(other)
    with pytest.raises(ValueError, match="backend='mxnet'"):
        vae_keras.import_keras("mxnet")
    assert vae_keras.import_keras(running) is keras


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
