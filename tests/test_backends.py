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


# One child process per backend does everything below that needs that backend, in this order: every shipped .keras
# file loaded with plain Keras (before anything else of vae_keras is imported), a short run reloaded, generated from,
# drawn and evaluated from the command line, the tensorflow modules then imported (none may be), the shipped model's
# test ELBO, then the unit tests of BACKEND_TEST_FILES. It writes what it saw to report.json.
CHILD_SCRIPT = """
    import contextlib, io, json, sys
    from pathlib import Path
    import keras, vae_keras  # nothing else first: the import registers the package's classes

    out = Path(sys.argv[1])
    report = {"backend": keras.backend.backend(), "loaded": {}}
    for path in sorted(Path(vae_keras.PRETRAINED_MODEL_PATH).parent.glob("*.keras")):
        model = keras.saving.load_model(path)
        again = keras.models.load_model(path)
        report["loaded"][path.name] = [type(model).__name__, type(again).__name__, model.count_params()]
    if sys.argv[2] == "everything":
        import numpy as np
        from vae_keras.__main__ import main
        from vae_keras import plotting

        (x_train, y_train), (x_test, y_test) = vae_keras.load_mnist()
        data = ((x_train[:256], y_train[:256]), (x_test[:128], y_test[:128]))
        config = vae_keras.VAEConfig(epochs=1, batch_size=128, train_size=256, test_size=128)
        result = vae_keras.train(config, output_dir=out / "run", data=data, verbose=0)
        model = vae_keras.load_vae(result.output_dir / "vae.keras")
        np.save(out / "codes.npy", np.asarray(model.encoder(x_test[:8])))
        report["iterations"] = int(result.model.optimizer.iterations)
        report["val_elbo"] = result.history["val_elbo"]
        report["shape"] = list(model.generate(4, seed=0).shape)
        plotting.plot_reconstructions(model, x_test[:200], y_test[:200], seed=0, path=out / "r.png")
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            report["evaluate_status"] = main(["evaluate", "--test-size", "32"])
            with contextlib.suppress(SystemExit):
                main(["--help"])
        report["printed"] = printed.getvalue()
        report["tensorflow_modules"] = sorted(name for name in sys.modules if name.split(".")[0] == "tensorflow")
        shipped = vae_keras.load_vae()
        shipped.sampling.reseed(0)
        report["pretrained"] = vae_keras.evaluate(shipped, x_test[:2000])
        import pytest

        report["pytest_status"] = int(pytest.main([
            "-q", "-p", "no:nbmake", "-o", "addopts=", "-p", "no:cacheprovider", "-m", "not slow_off_tensorflow",
            *sys.argv[3:],
        ]))
    (out / "report.json").write_text(json.dumps(report))
"""


def run_child(backend, out, everything=True):
    """Runs CHILD_SCRIPT on `backend` in a fresh process; returns its report, with the process' output in it."""
    out.mkdir(parents=True, exist_ok=True)
    what = ["everything", *BACKEND_TEST_FILES] if everything else ["load"]
    process = run_on(backend, ["-c", textwrap.dedent(CHILD_SCRIPT), str(out), *what])
    output = process.stdout[-5000:] + process.stderr[-3000:]
    assert (out / "report.json").is_file(), output
    return {**json.loads((out / "report.json").read_text()), "output": output, "out": out}


@pytest.fixture(scope="module", params=[pytest.param("jax", marks=needs("jax")), pytest.param("torch", marks=needs("torch"))])
def child(request, tmp_path_factory):
    """The report of one child process on another backend (CHILD_SCRIPT), shared by the tests below."""
    return run_child(request.param, tmp_path_factory.mktemp(f"child_{request.param}"))


def test_unit_tests_pass_on_backend(child):
    assert child["pytest_status"] == 0, child["output"]
    assert " passed" in child["output"] and " failed" not in child["output"]


def test_no_tensorflow_module_is_imported_on_another_backend(child):
    assert child["tensorflow_modules"] == []
    assert child["shape"] == [4, 28, 28, 1] and (child["out"] / "r.png").stat().st_size > 1000
    assert len(child["val_elbo"]) == 1 and np.isfinite(child["val_elbo"][0])


def check_shipped_files_load(report, backend):
    assert report["backend"] == backend
    shipped = sorted(path.name for path in (ROOT / "models").glob("*.keras"))
    assert sorted(report["loaded"]) == shipped and len(shipped) >= 4
    for name, (first, second, params) in report["loaded"].items():
        expected = {"digit_classifier.keras": "Functional", "vae_mnist_conditional.keras": "ConditionalVAE"}.get(name, "VAE")
        assert first == second == expected, (name, first, second)
        assert params > 50_000  # the 2-D model has 93,381
    assert report["loaded"]["vae_mnist.keras"][2] == 144_296 + 118_465  # the reference encoder and decoder


def test_every_shipped_keras_file_loads_with_plain_keras_after_import_vae_keras(child):
    check_shipped_files_load(child, child["backend"])


def test_every_shipped_keras_file_loads_with_plain_keras_after_import_vae_keras_on_tensorflow(tmp_path):
    check_shipped_files_load(run_child("tensorflow", tmp_path, everything=False), "tensorflow")


def test_the_command_line_runs_on_the_backend_keras_backend_names(child):
    assert child["evaluate_status"] == 0 and "Test ELBO loss = " in child["printed"]
    assert f"Keras backend: {child['backend']}." in child["printed"] and "KERAS_BACKEND" in child["printed"]


def test_a_backend_vae_keras_does_not_run_on_is_a_clear_error():
    process = run_on("numpy", ["-c", "import vae_keras"])
    assert process.returncode != 0
    assert "Set KERAS_BACKEND to one of those" in process.stderr and "'numpy'" in process.stderr


def test_pretrained_model_gives_the_same_test_elbo_on_each_backend(child, mnist):
    (_, _), (x_test, _) = mnist
    here = vae_keras.evaluate(vae_keras.load_vae(), x_test[:2000])
    there = child["pretrained"]
    # The backends draw different noise; 2,000 images average it to about +-0.05.
    assert there["elbo"] == pytest.approx(here["elbo"], abs=0.15)
    assert there["kl_loss"] == pytest.approx(here["kl_loss"], abs=0.02)  # the KL needs no noise


def test_a_model_trained_on_another_backend_loads_and_keeps_training_here(child, small_mnist):
    assert child["iterations"] == 2
    model = vae_keras.load_vae(child["out"] / "run" / "vae.keras")
    (x_train, _), (x_test, _) = small_mnist
    np.testing.assert_allclose(
        ops.convert_to_numpy(model.encoder(x_test[:8])), np.load(child["out"] / "codes.npy"), atol=1e-4
    )
    before = vae_keras.evaluate(model, x_test)["elbo"]
    model.fit(x_train[:512], batch_size=128, epochs=2, verbose=0)
    assert int(model.optimizer.iterations) == 2 + 8  # Adam's state came along
    assert vae_keras.evaluate(model, x_test)["elbo"] < before


# Both runs in one process with two CPU devices: data_parallel "auto" spreads each batch over them, False does not.
DATA_PARALLEL_SCRIPT = """
    import json, sys
    import vae_keras
    (x_train, y_train), (x_test, y_test) = vae_keras.load_mnist()
    data = ((x_train[:512], y_train[:512]), (x_test[:128], y_test[:128]))
    histories = {}
    for data_parallel in ("auto", False):
        config = vae_keras.VAEConfig(epochs=2, batch_size=128, train_size=512, test_size=128,
                                     eval_batch_size=128, data_parallel=data_parallel)
        result = vae_keras.train(config, output_dir=f"{sys.argv[1]}/{data_parallel}", data=data, verbose=1)
        histories[str(data_parallel)] = result.history["val_elbo"]
    print(json.dumps(histories))
"""


@needs("jax")
def test_data_parallel_over_two_cpu_devices_matches_one_device(tmp_path):
    two = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    process = run_on("jax", ["-c", textwrap.dedent(DATA_PARALLEL_SCRIPT), str(tmp_path)], two)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    assert process.stdout.count("data parallel over 2 devices") == 1
    histories = json.loads(process.stdout.strip().splitlines()[-1])
    parallel, single = histories["auto"], histories["False"]
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
