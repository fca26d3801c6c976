"""Tests for the training protocol: device choice, history, resume, reproducibility, NaN, CLI."""

import dataclasses
import json
import subprocess
import sys

import keras
import numpy as np
import pytest

import vae_keras
from vae_keras import VAEConfig, backends, records, training

SMALL = dict(train_size=512, test_size=128, batch_size=128, eval_batch_size=128)


@pytest.fixture
def small_data(small_mnist):
    return small_mnist


def test_fit_reads_the_batches_in_sequence(tmp_path, small_data, monkeypatch):
    requested = []
    get_batch = training.EpochBatches.__getitem__

    def recording(self, index):
        requested.append(index)
        return get_batch(self, index)

    monkeypatch.setattr(training.EpochBatches, "__getitem__", recording)
    config = VAEConfig(epochs=3, shuffle=True, **SMALL)
    training.train(config, tmp_path / "run", data=small_data, verbose=0)
    steps = config.steps_per_epoch()
    # Batch i is epoch i // steps: read in order, never reshuffled by fit (Keras
    # may first peek at a batch or two to learn their shapes).
    assert requested[-3 * steps :] == list(range(3 * steps))
    assert len(requested) <= 3 * steps + 2


def test_train_writes_history_model_and_prints_reference_line(tmp_path, small_data, capsys):
    config = VAEConfig(epochs=2, **SMALL)
    result = training.train(config, tmp_path / "run", data=small_data, verbose=0)
    assert result.history["epoch"] == [1, 2]
    for column in ("elbo", "reconstruction_loss", "kl_loss", "val_elbo", "epoch_seconds"):
        assert len(result.history[column]) == 2
        assert all(np.isfinite(result.history[column]))
    assert result.history["val_elbo"][1] < result.history["val_elbo"][0]
    restored = vae_keras.load_vae(tmp_path / "run" / "vae.keras")
    np.testing.assert_array_equal(
        restored.decoder.get_weights()[0], result.model.decoder.get_weights()[0]
    )
    # verbose=0 prints nothing; verbose=2 prints the reference's line.
    assert "Epoch :" not in capsys.readouterr().out
    training.train(VAEConfig(epochs=1, **SMALL), tmp_path / "loud", data=small_data, verbose=2)
    out = capsys.readouterr().out
    line = [text for text in out.splitlines() if text.startswith("Epoch : 1")]
    assert line and "Test ELBO loss = " in line[0] and "Time taken for epoch = " in line[0]


# Same seed, same losses, and an exact resume, are promised on the CPU (GPU
# kernels may sum in any order), so these run there on every machine.
CPU = dict(SMALL, execution_environment="cpu")


def test_same_seed_same_losses(tmp_path, small_data):
    config = VAEConfig(epochs=2, shuffle=True, **CPU)
    first = training.train(config, tmp_path / "a", data=small_data, verbose=0)
    second = training.train(config, tmp_path / "b", data=small_data, verbose=0)
    assert first.history["elbo"] == second.history["elbo"]
    assert first.history["val_elbo"] == second.history["val_elbo"]
    other = training.train(
        VAEConfig(epochs=2, shuffle=True, seed=1, **CPU), tmp_path / "c", data=small_data, verbose=0
    )
    assert other.history["elbo"] != first.history["elbo"]


class Interrupt(keras.callbacks.Callback):
    """Stops the run partway through an epoch, as Ctrl-C or a killed process would."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            raise KeyboardInterrupt


def test_resume_after_interruption_repeats_the_uninterrupted_run(tmp_path, small_data):
    config = VAEConfig(epochs=3, shuffle=True, **CPU)
    whole = training.train(config, tmp_path / "whole", data=small_data, verbose=0)

    run_dir = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        training.train(config, run_dir, data=small_data, verbose=0, callbacks=[Interrupt(2, 1)])
    assert records.read_history(run_dir / "history.csv")["epoch"] == [1, 2]
    assert records.latest_checkpoint(run_dir).epoch == 2

    resumed = training.train(config, run_dir, data=small_data, verbose=0)
    assert resumed.history["epoch"] == [1, 2, 3]
    np.testing.assert_allclose(resumed.history["elbo"], whole.history["elbo"], rtol=1e-6)
    np.testing.assert_allclose(resumed.history["val_elbo"], whole.history["val_elbo"], rtol=1e-6)
    assert records.latest_checkpoint(run_dir).finished is True


def test_resume_with_another_config_is_refused(tmp_path, small_data):
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        training.train(
            VAEConfig(epochs=2, **SMALL), run_dir, data=small_data, verbose=0,
            callbacks=[Interrupt(1, 0)],
        )
    with pytest.raises(FileExistsError, match="learning_rate"):
        training.train(VAEConfig(epochs=2, learning_rate=0.01, **SMALL), run_dir, data=small_data, verbose=0)


def test_resume_of_a_run_saved_before_a_config_field_existed(tmp_path, small_data):
    # config.json of a run from an older vae_keras lacks the newer fields;
    # they count as their defaults, so the run still resumes.
    import json

    run_dir = tmp_path / "run"
    config = VAEConfig(epochs=2, **SMALL)
    with pytest.raises(KeyboardInterrupt):
        training.train(config, run_dir, data=small_data, verbose=0, callbacks=[Interrupt(1, 0)])
    saved = json.loads((run_dir / "config.json").read_text())
    del saved["precision"]
    (run_dir / "config.json").write_text(json.dumps(saved))
    assert training.train(config, run_dir, data=small_data, verbose=0).history["epoch"] == [1, 2]


@pytest.mark.slow_off_tensorflow
def test_mixed_bfloat16_trains_to_the_float32_loss(tmp_path, small_data):
    # bfloat16 arithmetic changes the rounding, not what is computed: after a
    # few epochs the test ELBO is the float32 run's to within the spread that
    # another seed gives.
    sizes = dict(SMALL, train_size=1024, test_size=256)
    runs = {
        name: training.train(VAEConfig(epochs=4, **sizes, **extra), tmp_path / name, data=small_data, verbose=0)
        for name, extra in {
            "float32": {},
            "bfloat16": {"precision": "mixed_bfloat16"},
            "seed1": {"seed": 1},
        }.items()
    }
    final = {name: run.history["val_elbo"][-1] for name, run in runs.items()}
    assert final["bfloat16"] < runs["bfloat16"].history["val_elbo"][0]  # it learns
    assert final["bfloat16"] != final["float32"]  # it really ran in bfloat16
    seed_spread = abs(final["seed1"] - final["float32"])
    assert abs(final["bfloat16"] - final["float32"]) < max(2 * seed_spread, 0.03 * final["float32"])


def test_finished_run_is_not_overwritten_by_accident(tmp_path, small_data):
    run_dir = tmp_path / "run"
    training.train(VAEConfig(epochs=1, **SMALL), run_dir, data=small_data, verbose=0)
    saved = (run_dir / "vae.keras").read_bytes()
    with pytest.raises(FileExistsError, match=str(run_dir)):
        training.train(VAEConfig(epochs=1, **SMALL), run_dir, data=small_data, verbose=0)
    assert (run_dir / "vae.keras").read_bytes() == saved
    result = training.train(VAEConfig(epochs=1, **SMALL), run_dir, data=small_data, verbose=0, overwrite=True)
    assert result.history["epoch"] == [1]


def test_nan_stops_with_a_clear_message_and_keeps_the_last_good_model(tmp_path, small_data):
    run_dir = tmp_path / "run"
    config = VAEConfig(epochs=3, learning_rate=1e12, **SMALL)
    with pytest.raises(training.TrainingDiverged, match="NaN") as error_info:
        training.train(config, run_dir, data=small_data, verbose=0)
    assert "learning_rate" in str(error_info.value)
    if (run_dir / "vae.keras").exists():
        assert str(run_dir / "vae.keras") in str(error_info.value)
        model = vae_keras.load_vae(run_dir / "vae.keras")
        assert all(np.isfinite(w).all() for w in model.get_weights())
    else:  # diverged in its first epoch: the message must not point to a missing file
        assert "No epoch finished" in str(error_info.value)


def test_a_run_interrupted_in_its_first_epoch_starts_again(tmp_path, small_data, capsys):
    config = VAEConfig(epochs=2, **CPU)
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        training.train(config, run_dir, data=small_data, verbose=1, callbacks=[Interrupt(0, 1)])
    assert not (run_dir / "vae.keras").exists()  # nothing finished yet
    capsys.readouterr()
    result = training.train(config, run_dir, data=small_data, verbose=1)
    assert "starts again from epoch 1" in capsys.readouterr().out
    assert result.history["epoch"] == [1, 2]
    whole = training.train(config, tmp_path / "whole", data=small_data, verbose=0)
    assert result.history["val_elbo"] == whole.history["val_elbo"]


def test_one_training_per_folder_at_a_time(tmp_path, small_data):
    fcntl = pytest.importorskip("fcntl", reason="advisory file locks are POSIX-only")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with open(run_dir / records.LOCK_FILE, "a+") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running training holds it
        with pytest.raises(RuntimeError, match="in use by another training"):
            training.train(VAEConfig(epochs=1, **CPU), run_dir, data=small_data, verbose=0)
        fcntl.flock(holder, fcntl.LOCK_UN)
    assert not (run_dir / "history.csv").exists()  # the refused run touched nothing
    # Released (as when the holder ends or is killed), the folder trains.
    assert training.train(VAEConfig(epochs=1, **CPU), run_dir, data=small_data, verbose=0).history["epoch"] == [1]


class Killed(BaseException):
    """Stands for SIGKILL at a chosen instruction: nothing after it runs."""


def kill_at(monkeypatch, target, name, call, only=None):
    """Makes the `call`-th call of `target.name` (counting those whose first argument passes `only`) die."""
    original = getattr(target, name)
    calls = []

    def dying(*args, **kwargs):
        if only is None or only(args[0]):
            calls.append(args)
        if len(calls) == call:
            raise Killed(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, dying)


# Each point of an epoch's checkpoint write (epoch 2 of 3: the second call),
# then a resume that must repeat the uninterrupted run epoch for epoch.
KILL_POINTS = {
    "as the weights are written": (vae_keras.VAE, "save_weights", 2),
    "between the weights and the metadata": (
        records, "_fsync", 2, lambda path: path.name == records.CHECKPOINT_STATE
    ),
    "before the checkpoint's rename": (records.os, "rename", 2),
    "after the rename, before the history": (records, "write_history", 2),
    "while the model file is replaced": (records.os, "replace", 4),
}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, small_mnist):
    return training.train(VAEConfig(epochs=3, shuffle=True, **CPU), tmp_path_factory.mktemp("whole"), data=small_mnist, verbose=0)


@pytest.mark.slow_off_tensorflow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_kill_at_any_point_of_the_checkpoint_resumes_to_the_same_run(point, tmp_path, small_data, uninterrupted, monkeypatch):
    config = VAEConfig(epochs=3, shuffle=True, **CPU)
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        kill_at(patch, *KILL_POINTS[point])
        with pytest.raises(Killed):
            training.train(config, run_dir, data=small_data, verbose=0)
    resumed = training.train(config, run_dir, data=small_data, verbose=0)
    assert resumed.history["epoch"] == [1, 2, 3]
    np.testing.assert_allclose(resumed.history["elbo"], uninterrupted.history["elbo"], rtol=1e-6)
    np.testing.assert_allclose(resumed.history["val_elbo"], uninterrupted.history["val_elbo"], rtol=1e-6)
    assert vae_keras.load_vae(run_dir / "vae.keras").optimizer.iterations.numpy() == 3 * config.steps_per_epoch()
    leftovers = [p.name for p in (run_dir / "checkpoint").iterdir()]
    assert leftovers == ["epoch-0003"], leftovers


@pytest.mark.slow_off_tensorflow
def test_a_glued_or_cut_history_is_rewritten_from_the_checkpoint(tmp_path, small_data, uninterrupted):
    config = VAEConfig(epochs=3, shuffle=True, **CPU)
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        training.train(config, run_dir, data=small_data, verbose=0, callbacks=[Interrupt(2, 1)])
    history = run_dir / "history.csv"
    history.write_text(history.read_text()[:-7])  # cut mid-row, as a kill during a plain write would
    resumed = training.train(config, run_dir, data=small_data, verbose=0)
    assert resumed.history["epoch"] == [1, 2, 3]
    np.testing.assert_allclose(resumed.history["val_elbo"], uninterrupted.history["val_elbo"], rtol=1e-6)


def interrupted_run(tmp_path, small_data, epochs=3, **overrides):
    """A run folder stopped in its second epoch: a checkpoint of epoch 1, config.json, history.csv, vae.keras."""
    config = VAEConfig(epochs=epochs, **{**CPU, **overrides})
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        training.train(config, run_dir, data=small_data, verbose=0, callbacks=[Interrupt(1, 0)])
    return config, run_dir


def folder_bytes(folder):
    """Every file below `folder` with its content, to show that nothing was written."""
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def rewrite_meta(meta_path, change):
    """Edits meta.json as a careful forger would: the change, then a digest that matches it."""
    meta = json.loads(meta_path.read_text())
    change(meta)
    meta["digest"] = records._digest(meta)
    meta_path.write_text(json.dumps(meta))


def test_a_damaged_checkpoint_is_a_clear_error_and_is_left_alone(tmp_path, small_data):
    config, run_dir = interrupted_run(tmp_path, small_data)
    meta = run_dir / "checkpoint" / "epoch-0001" / "meta.json"
    good_meta = meta.read_text()
    for damage in ("", "[1, 2]", '{"epoch": 9, "history": []}'):
        meta.write_text(damage)
        with pytest.raises(ValueError, match=str(meta)):
            training.train(config, run_dir, data=small_data, verbose=0)
        assert meta.read_text() == damage  # nothing was overwritten
    meta.unlink()
    with pytest.raises(ValueError, match=f"{meta} is missing"):
        training.train(config, run_dir, data=small_data, verbose=0)
    meta.write_text(good_meta)
    state = run_dir / "checkpoint" / "epoch-0001" / "state.weights.h5"
    good = state.read_bytes()
    state.write_bytes(good[: len(good) // 2])  # weights cut short, the optimizer's section lost
    with pytest.raises(ValueError, match=str(state)):
        training.train(config, run_dir, data=small_data, verbose=0)
    assert state.read_bytes() == good[: len(good) // 2]
    state.unlink()  # a deleted state file is named as such, not blamed on meta.json
    with pytest.raises(ValueError, match=f"{state} is missing"):
        training.train(config, run_dir, data=small_data, verbose=0)
    state.write_bytes(good)
    assert training.train(config, run_dir, data=small_data, verbose=0).history["epoch"] == [1, 2, 3]


def test_flipped_bytes_inside_the_state_file_are_refused_before_loading(tmp_path, small_data):
    config, run_dir = interrupted_run(tmp_path, small_data)
    state = run_dir / "checkpoint" / "epoch-0001" / "state.weights.h5"
    damaged = bytearray(state.read_bytes())
    middle = len(damaged) // 2
    damaged[middle : middle + 64] = bytes(255 - b for b in damaged[middle : middle + 64])  # h5py still reads it
    state.write_bytes(bytes(damaged))
    before = folder_bytes(run_dir)
    with pytest.raises(ValueError, match=f"{state} is not a valid checkpoint .its SHA-256"):
        training.train(config, run_dir, data=small_data, verbose=0)
    assert folder_bytes(run_dir) == before  # the evidence stays


def test_a_state_file_from_another_run_is_refused(tmp_path, small_data):
    config, run_dir = interrupted_run(tmp_path, small_data)
    _, other_dir = interrupted_run(tmp_path / "other", small_data, seed=1)
    state = run_dir / "checkpoint" / "epoch-0001" / "state.weights.h5"
    state.write_bytes((other_dir / "checkpoint" / "epoch-0001" / "state.weights.h5").read_bytes())
    with pytest.raises(ValueError, match="SHA-256"):
        training.train(config, run_dir, data=small_data, verbose=0)


def test_edited_metadata_is_refused_even_with_a_matching_digest_of_the_state(tmp_path, small_data):
    config, run_dir = interrupted_run(tmp_path, small_data)
    meta = run_dir / "checkpoint" / "epoch-0001" / "meta.json"
    good = meta.read_text()
    meta.write_text(good.replace('"finished": false', '"finished": true'))  # edited by hand
    with pytest.raises(ValueError, match="edited or damaged"):
        training.train(config, run_dir, data=small_data, verbose=0)
    rewrite_meta(meta, lambda m: m.update(finished=True))  # consistent digest, inconsistent claim
    with pytest.raises(ValueError, match="finished=True does not follow from epoch 1 of 3"):
        training.train(config, run_dir, data=small_data, verbose=0)
    rewrite_meta(meta, lambda m: m.update(finished=False, history=[dict(m["history"][0], epoch=7)]))
    with pytest.raises(ValueError, match="history rows are not epochs 0 to 0"):
        training.train(config, run_dir, data=small_data, verbose=0)
    meta.write_text(good)
    assert training.train(config, run_dir, data=small_data, verbose=0).history["epoch"] == [1, 2, 3]


@pytest.mark.parametrize("change", [{"seed": 1}, {"learning_rate": 0.01}, {"shuffle": True}])
def test_a_resume_with_another_configuration_is_refused_even_without_config_json(tmp_path, small_data, change):
    config, run_dir = interrupted_run(tmp_path, small_data)
    (run_dir / "config.json").unlink()
    name = next(iter(change))
    before = folder_bytes(run_dir)
    with pytest.raises(FileExistsError, match=f"another configuration: {name} .the run: "):
        training.train(dataclasses.replace(config, **change), run_dir, data=small_data, verbose=0)
    assert folder_bytes(run_dir) == before  # config.json is not rewritten with the new claim


def test_a_resume_on_another_backend_is_refused(tmp_path, small_data, monkeypatch):
    config, run_dir = interrupted_run(tmp_path, small_data)
    other = "jax" if backends.BACKEND != "jax" else "tensorflow"
    monkeypatch.setattr(backends, "BACKEND", other)  # as KERAS_BACKEND=other would start Keras
    with pytest.raises(FileExistsError, match=f"backend .the run: '{keras.backend.backend()}', now: '{other}'.*KERAS_BACKEND={keras.backend.backend()}"):
        training.train(config, run_dir, data=small_data, verbose=0)


def test_a_kill_after_the_last_checkpoint_leaves_every_row_and_the_model(tmp_path, small_data, monkeypatch):
    config = VAEConfig(epochs=2, **CPU)
    run_dir = tmp_path / "run"
    kill_at(monkeypatch, records, "write_history", 2)  # after the last epoch's checkpoint, before its row
    with pytest.raises(Killed):
        training.train(config, run_dir, data=small_data, verbose=0)
    monkeypatch.undo()
    assert records.read_history(run_dir / "history.csv")["epoch"] == [1]
    (run_dir / "vae.keras").unlink()  # lost too
    with pytest.raises(FileExistsError, match="already holds a finished run"):
        training.train(config, run_dir, data=small_data, verbose=0)
    history = records.read_history(run_dir / "history.csv")
    whole = training.train(config, tmp_path / "whole", data=small_data, verbose=0)
    assert history["epoch"] == [1, 2]  # every row, from the checkpoint
    for name in ("elbo", "val_elbo", "kl_loss", "reconstruction_loss"):
        assert history[name] == whole.history[name]
    rebuilt, reference = vae_keras.load_vae(run_dir / "vae.keras"), whole.model
    for a, b in zip(rebuilt.weights, reference.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_checkpoint_that_is_a_file_or_a_folder_without_one_keeps_the_model(tmp_path, small_data):
    config, run_dir = interrupted_run(tmp_path, small_data)
    import shutil

    shutil.rmtree(run_dir / "checkpoint")
    (run_dir / "checkpoint").write_text("not a folder")
    before = folder_bytes(run_dir)
    with pytest.raises(ValueError, match=f"{run_dir / 'checkpoint'} is a file"):
        training.train(config, run_dir, data=small_data, verbose=0)
    (run_dir / "checkpoint").unlink()
    with pytest.raises(FileExistsError, match="history.csv and vae.keras but no checkpoint/"):
        training.train(config, run_dir, data=small_data, verbose=0)
    assert {k: v for k, v in folder_bytes(run_dir).items() if k.name != ".lock"} == {
        k: v for k, v in before.items() if k.name not in (".lock", "checkpoint")
    }  # vae.keras and the history are untouched


@pytest.mark.slow_off_tensorflow
def test_a_full_disk_keeps_the_last_checkpoint_and_says_so(tmp_path, small_data, monkeypatch, capsys):
    import errno

    from vae_keras.__main__ import main

    run_dir = tmp_path / "run"
    args = ["train", "--epochs", "3", "--train-size", "512", "--test-size", "128", "--batch-size", "128",
            "--eval-batch-size", "128", "--execution-environment", "cpu", "--output-dir", str(run_dir), "--verbose", "0"]
    original = vae_keras.VAE.save_weights
    calls = []

    def disk_full(self, filepath, *rest, **kwargs):
        calls.append(filepath)
        if len(calls) == 2:  # epoch 2's checkpoint: simulated, as a tiny tmpfs needs mount rights
            raise OSError(errno.ENOSPC, "No space left on device", str(filepath))
        return original(self, filepath, *rest, **kwargs)

    monkeypatch.setattr(vae_keras.VAE, "save_weights", disk_full)
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "No space left on device" in error and "Traceback" not in error
    assert records.latest_checkpoint(run_dir).epoch == 1  # the last good one, untouched
    monkeypatch.setattr(vae_keras.VAE, "save_weights", original)
    assert main(args) == 0  # space again: the same command resumes and finishes
    assert records.read_history(run_dir / "history.csv")["epoch"] == [1, 2, 3]


@pytest.fixture
def tiny_disk(tmp_path):
    """An 8 MB tmpfs: room for the first epoch's files, not for the second's."""
    mount_point = tmp_path / "tiny_disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'needs root'}); "
                    "test_a_full_disk_keeps_the_last_checkpoint_and_says_so simulates it")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=False)


@pytest.mark.slow_off_tensorflow
def test_a_real_full_disk_is_a_clear_error_and_loses_no_finished_epoch(tiny_disk, tmp_path, capsys):
    import shutil

    from vae_keras.__main__ import main

    def args(run_dir):
        return ["train", "--epochs", "3", "--train-size", "512", "--test-size", "128", "--batch-size", "128",
                "--eval-batch-size", "128", "--execution-environment", "cpu", "--verbose", "0",
                "--output-dir", str(run_dir)]

    run_dir = tiny_disk / "run"
    assert main(args(run_dir)) == 2
    error = capsys.readouterr().err
    assert "No space left on device" in error and "Traceback" not in error
    assert records.latest_checkpoint(run_dir).epoch >= 1  # finished epochs kept
    vae_keras.load_vae(run_dir / "vae.keras")  # the last good model is whole
    moved = tmp_path / "run"  # room again: the same command finishes the run
    shutil.copytree(run_dir, moved, ignore=shutil.ignore_patterns(".lock"))
    assert main(args(moved)) == 0
    assert records.read_history(moved / "history.csv")["epoch"] == [1, 2, 3]


KILL_SCRIPT = """
import sys
import vae_keras
(x_train, y_train), (x_test, y_test) = vae_keras.load_mnist()
data = ((x_train[:512], y_train[:512]), (x_test[:128], y_test[:128]))
config = vae_keras.VAEConfig(epochs=6, shuffle=True, train_size=512, test_size=128, batch_size=128,
                             eval_batch_size=128, execution_environment="cpu")
vae_keras.train(config, output_dir=sys.argv[1], data=data, verbose=1)
"""


@pytest.mark.slow_off_tensorflow
def test_sigkill_at_chosen_moments_then_resume_equals_the_uninterrupted_run(tmp_path):
    import signal
    import time

    def start(run_dir):
        return subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(run_dir)], stdout=subprocess.PIPE, text=True)

    whole = tmp_path / "whole"
    assert start(whole).wait(timeout=600) == 0
    run_dir = tmp_path / "killed"
    # SIGKILL right after an epoch's line (while its files are written), and a little later.
    for epoch, delay in ((2, 0.0), (3, 0.05), (4, 0.15)):
        process = start(run_dir)
        for line in process.stdout:
            if line.startswith(f"Epoch : {epoch} "):
                time.sleep(delay)
                process.send_signal(signal.SIGKILL)
                break
        process.wait(timeout=60)
        assert process.returncode == -signal.SIGKILL
    assert start(run_dir).wait(timeout=600) == 0
    resumed, reference = records.read_history(run_dir / "history.csv"), records.read_history(whole / "history.csv")
    assert resumed["epoch"] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(resumed["val_elbo"], reference["val_elbo"], rtol=1e-6)
    np.testing.assert_allclose(resumed["elbo"], reference["elbo"], rtol=1e-6)


def test_kl_warmup_continues_exactly_across_a_resume(tmp_path, small_data):
    config = VAEConfig(epochs=3, beta=2.0, kl_warmup_epochs=2, **CPU)
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        training.train(config, run_dir, data=small_data, verbose=0, callbacks=[Interrupt(1, 1)])
    resumed = training.train(config, run_dir, data=small_data, verbose=0)
    whole = training.train(config, tmp_path / "whole", data=small_data, verbose=0)
    assert resumed.history["val_elbo"] == whole.history["val_elbo"]
    assert float(np.asarray(whole.model.kl_weight)) == 2.0  # epoch 3: 2.0 * min(1, 2 / 2)
    assert [whole.model.kl_weight_at(epoch) for epoch in range(3)] == [0.0, 1.0, 2.0]


def test_a_beta_run_reports_the_true_elbo_and_trains_on_the_weighted_loss(tmp_path, small_data):
    config = VAEConfig(epochs=1, beta=4.0, **CPU)
    result = training.train(config, tmp_path / "run", data=small_data, verbose=0)
    model = result.model
    (_, _), (x_test, _) = small_data
    model.sampling.reseed(0)
    loss, terms = model.loss_and_terms(x_test[:64])
    terms = {name: np.asarray(keras.ops.convert_to_numpy(value)) for name, value in terms.items()}
    np.testing.assert_allclose(terms["elbo"], terms["reconstruction_loss"] + terms["kl_loss"], rtol=1e-5)
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(loss)),
                               np.mean(terms["reconstruction_loss"] + 4.0 * terms["kl_loss"]), rtol=1e-5)
    history = result.history
    np.testing.assert_allclose(history["val_elbo"], np.add(history["val_reconstruction_loss"], history["val_kl_loss"]), rtol=1e-5)
    reloaded = vae_keras.load_vae(result.output_dir / "vae.keras")
    assert (reloaded.beta, reloaded.likelihood, float(np.asarray(reloaded.kl_weight))) == (4.0, "gaussian", 4.0)


def test_a_bernoulli_run_trains_and_reloads(tmp_path, small_data):
    result = training.train(VAEConfig(epochs=1, likelihood="bernoulli", **CPU), tmp_path / "run", data=small_data, verbose=0)
    history = result.history
    assert history["val_elbo"][0] > 100  # summed cross-entropy: another scale than the Gaussian's ~30 after one short epoch
    reloaded = vae_keras.load_vae(result.output_dir / "vae.keras")
    assert reloaded.likelihood == "bernoulli" and reloaded.kl_weight is None
