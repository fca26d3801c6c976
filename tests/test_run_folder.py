"""Tests for vae_keras.run_folder and vae_keras.files: a run's files, checked before anything is written, written whole or not at all.

These write checkpoints of a built, untrained model directly (no training), so
each point of a write can be killed and checked in a fraction of a second;
tests/test_training.py trains, kills and resumes whole runs.
"""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vae_keras import VAEConfig, backends, files, plotting, run_folder, training
from vae_keras.run_folder import RunFolder, run_identity

# The quick subset for the edit-test loop: `pytest -m quick` (README).
pytestmark = pytest.mark.quick

CONFIG = VAEConfig(epochs=3, train_size=512, test_size=128, batch_size=128, eval_batch_size=128)
STEPS = CONFIG.steps_per_epoch()
IDENTITY = run_identity(CONFIG, backends.BACKEND)


@pytest.fixture(scope="module")
def model():
    """A compiled VAE whose optimizer is built: what a checkpoint holds, without training."""
    model = training.build_model(CONFIG)
    model.optimizer.build(model.trainable_variables)
    return model


def rows(epochs):
    return [{"epoch": epoch, "elbo": 30.0 - epoch, "val_elbo": 29.0 - epoch} for epoch in range(epochs)]


def write_epochs(folder, model, last, first=1, identity=IDENTITY):
    """Writes the checkpoints of epochs first..last as training would, the optimizer's step count with them."""
    for epoch in range(first, last + 1):
        model.optimizer.iterations.assign(epoch * STEPS)
        folder.write_epoch(model, epoch, rows(epoch), identity)


def folder_bytes(folder):
    """Every file below `folder` with its content, to show that nothing was written."""
    return {path.relative_to(folder): path.read_bytes() for path in sorted(Path(folder).rglob("*")) if path.is_file()}


def rewrite_meta(meta_path, change):
    """Edits meta.json as a careful forger would: the change, then a digest that matches it."""
    meta = json.loads(meta_path.read_text())
    change(meta)
    meta["digest"] = run_folder._digest(meta)
    meta_path.write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def epoch_one(model, tmp_path_factory):
    """A run folder after epoch 1 of 3: config.json, history.csv, vae.keras and checkpoint/epoch-0001/."""
    folder = RunFolder(tmp_path_factory.mktemp("epoch_one") / "run")
    with folder.locked():
        folder.start(IDENTITY, None)
        write_epochs(folder, model, 1)
    return folder.path


@pytest.fixture
def run_dir(epoch_one, tmp_path):
    """A fresh copy of `epoch_one` for a test to damage."""
    return Path(shutil.copytree(epoch_one, tmp_path / "run"))


def test_an_epoch_is_written_once_as_one_checkpoint_with_the_run_files_beside_it(run_dir, model):
    folder = RunFolder(run_dir)
    checkpoint = folder.latest_checkpoint()
    assert (checkpoint.epoch, checkpoint.history, checkpoint.identity) == (1, rows(1), IDENTITY)
    assert sorted(p.name for p in checkpoint.folder.iterdir()) == ["meta.json", "vae.keras"]
    assert (run_dir / "vae.keras").read_bytes() == checkpoint.model_file.read_bytes()
    assert run_folder.read_history(run_dir / "history.csv")["epoch"] == [1]
    write_epochs(folder, model, 2, first=2)
    assert sorted(p.name for p in (run_dir / "checkpoint").iterdir()) == ["epoch-0002"]  # the older one dropped
    # The run's vae.keras is the checkpoint's file itself, not a second save.
    assert os.stat(run_dir / "vae.keras").st_ino == os.stat(run_dir / "checkpoint" / "epoch-0002" / "vae.keras").st_ino
    restored = training.build_model(CONFIG)
    folder.restore(restored, folder.latest_checkpoint(), STEPS)
    for a, b in zip(restored.weights + restored.optimizer.variables, model.weights + model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


class Killed(BaseException):
    """Stands for SIGKILL at a chosen instruction: nothing after it runs (not even `finally` blocks' later lines)."""


# Each point of epoch 2's write; the folder must then hold epoch 1 or epoch 2, whole.
KILL_POINTS = {
    "as the model is serialized": (run_folder.saving_lib, "save_model", 1, 1),
    "between the model file and meta.json": (run_folder, "fsync", 1, 1),
    "before the checkpoint's rename": (run_folder.os, "rename", 1, 1),
    "after the rename, before the model file's link": (run_folder.os, "link", 1, 2),
    "after the model file, before the history": (run_folder, "write_history", 1, 2),
    "while the history is replaced": (files.os, "replace", 2, 2),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_kill_at_any_point_of_an_epochs_write_leaves_a_whole_checkpoint_that_resumes(point, run_dir, model, monkeypatch):
    target, name, call, expected_epoch = KILL_POINTS[point]
    original, calls = getattr(target, name), []

    def dying(*args, **kwargs):
        calls.append(args)
        if len(calls) == call:
            raise Killed(name)
        return original(*args, **kwargs)

    folder = RunFolder(run_dir)
    with monkeypatch.context() as patch:
        patch.setattr(target, name, dying)
        with pytest.raises(Killed):
            write_epochs(folder, model, 2, first=2)
    checkpoint = folder.check(IDENTITY)
    assert checkpoint.epoch == expected_epoch
    restored = training.build_model(CONFIG)
    folder.restore(restored, checkpoint, STEPS)
    folder.start(IDENTITY, checkpoint)  # what train does next: the run files rebuilt from the checkpoint
    assert run_folder.read_history(run_dir / "history.csv")["epoch"] == list(range(1, expected_epoch + 1))
    assert (run_dir / "vae.keras").read_bytes() == checkpoint.model_file.read_bytes()
    write_epochs(folder, model, 3, first=expected_epoch + 1)  # the run goes on
    assert sorted(p.name for p in (run_dir / "checkpoint").iterdir()) == ["epoch-0003"]
    assert not [p.name for p in run_dir.iterdir() if "partial" in p.name]


def test_a_damaged_checkpoint_is_refused_naming_the_file_and_left_alone(run_dir):
    folder = RunFolder(run_dir)
    meta = run_dir / "checkpoint" / "epoch-0001" / "meta.json"
    good_meta = meta.read_text()
    for damage in ("", "[1, 2]", '{"epoch": 9, "history": []}', "[" * 100_000):  # the last: nested past recursion
        meta.write_text(damage)
        with pytest.raises(ValueError, match=str(meta)):
            folder.check(IDENTITY)
        assert meta.read_text() == damage  # nothing was overwritten
    meta.unlink()
    with pytest.raises(ValueError, match=f"{meta} is missing"):
        folder.check(IDENTITY)
    meta.write_text(good_meta)
    model_file = run_dir / "checkpoint" / "epoch-0001" / "vae.keras"
    good = model_file.read_bytes()
    for damaged in (good[: len(good) // 2], good[:100] + bytes(255 - b for b in good[100:164]) + good[164:]):
        model_file.write_bytes(damaged)  # cut short; a few flipped bytes that a zip reader may not notice
        before = folder_bytes(run_dir)
        with pytest.raises(ValueError, match=f"{model_file} is not a valid checkpoint .its SHA-256"):
            folder.check(IDENTITY)
        assert folder_bytes(run_dir) == before  # the evidence stays
    model_file.unlink()  # a deleted model file is named as such, not blamed on meta.json
    with pytest.raises(ValueError, match=f"{model_file} is missing"):
        folder.check(IDENTITY)
    model_file.write_bytes(good)
    assert folder.check(IDENTITY).epoch == 1


def test_edited_metadata_is_refused_even_with_a_matching_digest(run_dir):
    folder = RunFolder(run_dir)
    meta = run_dir / "checkpoint" / "epoch-0001" / "meta.json"
    good = meta.read_text()
    meta.write_text(good.replace('"epoch": 1,', '"epoch": 2,'))  # edited by hand
    with pytest.raises(ValueError, match="edited or damaged"):
        folder.check(IDENTITY)
    meta.write_text(good)
    rewrite_meta(meta, lambda m: m.update(history=[dict(m["history"][0], epoch=7)]))
    with pytest.raises(ValueError, match="history rows are not epochs 0 to 0"):
        folder.check(IDENTITY)
    rewrite_meta(meta, lambda m: m.update(format=2))
    with pytest.raises(ValueError, match="format 2, not 3: written by another version"):
        folder.check(IDENTITY)


def test_a_refused_resume_writes_nothing_not_even_the_history(run_dir, small_mnist):
    # A forged checkpoint (digests recomputed) passes every file check; the optimizer's
    # step count then refuses it, and history.csv and config.json must be as they were.
    checkpoint = run_dir / "checkpoint"
    (checkpoint / "epoch-0001").rename(checkpoint / "epoch-0002")
    rewrite_meta(checkpoint / "epoch-0002" / "meta.json", lambda m: m.update(epoch=2, history=rows(2)))
    before = folder_bytes(run_dir)
    with pytest.raises(ValueError, match="holds an optimizer after 4 steps, not the 8 of its 2 epochs"):
        training.train(CONFIG, run_dir, data=small_mnist, verbose=0)
    assert {k: v for k, v in folder_bytes(run_dir).items() if k.name != ".lock"} == {
        k: v for k, v in before.items() if k.name != ".lock"
    }


@pytest.mark.parametrize("change", [{"seed": 1}, {"learning_rate": 0.01}, {"shuffle": True}])
def test_another_configuration_is_refused_naming_the_field_and_nothing_is_written(run_dir, change):
    import dataclasses

    (run_dir / "config.json").unlink()  # the checkpoint's record is what counts
    before = folder_bytes(run_dir)
    name = next(iter(change))
    with pytest.raises(FileExistsError, match=f"another configuration: {name} .the run: "):
        RunFolder(run_dir).check(run_identity(dataclasses.replace(CONFIG, **change), backends.BACKEND))
    assert folder_bytes(run_dir) == before


def test_another_backend_is_refused_and_more_epochs_carry_on_but_fewer_are_refused(run_dir):
    import dataclasses

    folder = RunFolder(run_dir)
    other = "jax" if backends.BACKEND != "jax" else "tensorflow"
    with pytest.raises(FileExistsError, match=f"backend .the run: '{backends.BACKEND}', now: '{other}'.*KERAS_BACKEND={backends.BACKEND}"):
        folder.check(run_identity(CONFIG, other))
    assert folder.check(run_identity(dataclasses.replace(CONFIG, epochs=50), backends.BACKEND)).epoch == 1
    write_epochs(folder, training.build_model(CONFIG), 2, first=2)
    with pytest.raises(FileExistsError, match="holds a run of 2 finished epochs, more than epochs=1"):
        folder.check(run_identity(dataclasses.replace(CONFIG, epochs=1), backends.BACKEND))


def test_a_field_the_saved_run_predates_counts_as_its_default(run_dir):
    # A run written before a VAEConfig field existed still resumes: the field holds its default.
    rewrite_meta(run_dir / "checkpoint" / "epoch-0001" / "meta.json", lambda m: m["identity"]["config"].pop("precision"))
    assert RunFolder(run_dir).check(IDENTITY).epoch == 1


def test_run_files_without_a_checkpoint_and_a_checkpoint_that_is_a_file_are_refused(run_dir):
    folder = RunFolder(run_dir)
    shutil.rmtree(run_dir / "checkpoint")
    (run_dir / "checkpoint").write_text("not a folder")
    with pytest.raises(ValueError, match=f"{run_dir / 'checkpoint'} is a file"):
        folder.check(IDENTITY)
    (run_dir / "checkpoint").unlink()
    before = folder_bytes(run_dir)
    with pytest.raises(FileExistsError, match="history.csv and vae.keras but no checkpoint/"):
        folder.check(IDENTITY)
    assert folder_bytes(run_dir) == before


def test_checkpoints_past_epoch_9999_are_found(tmp_path, model):
    # Four digits were the folder pattern: epoch 10,000's checkpoint was invisible to a resume.
    import dataclasses

    identity = run_identity(dataclasses.replace(CONFIG, epochs=20_000), backends.BACKEND)
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    for epoch in (9_999, 10_000):
        model.optimizer.iterations.assign(epoch * STEPS)
        folder.write_epoch(model, epoch, rows(epoch), identity)
    assert [p.name for p in (tmp_path / "run" / "checkpoint").iterdir()] == ["epoch-10000"]
    assert folder.check(identity).epoch == 10_000


def test_read_history_names_the_file_and_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        run_folder.read_history(tmp_path / "nothing.csv")
    for content, message in [
        ("a,b\n1,2\n", "has no 'epoch' column"),
        (bytes(range(256)) * 4, "is not a training history .a CSV text file"),
        ("epoch,elbo,val_elbo\n0,30.1,28.0\n1,27.5\n", "line 3: not a row of the history"),
        ("epoch,elbo\n0,thirty\n", "line 2: elbo='thirty' is not a number"),
    ]:
        path = tmp_path / "history.csv"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(ValueError, match=f"{path}.*{message}"):
            run_folder.read_history(path)


def test_a_file_is_replaced_whole_or_not_at_all_and_a_full_disk_is_one_error(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch\n0\n")

    def killed(temporary):
        Path(temporary).write_bytes(b"half")
        raise KeyboardInterrupt

    def disk_full(temporary):
        Path(temporary).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(KeyboardInterrupt):
        files.write_atomically(path, killed)
    with pytest.raises(OSError, match=f"No space left on device while writing {path}") as error_info:
        files.write_atomically(path, disk_full)
    assert error_info.value.errno == errno.ENOSPC
    assert path.read_text() == "epoch\n0\n" and sorted(p.name for p in tmp_path.iterdir()) == ["history.csv"]


def test_a_figure_killed_while_written_leaves_no_file(tmp_path, monkeypatch):
    import matplotlib.figure

    figure = matplotlib.figure.Figure()
    figure.subplots().plot([0, 1])

    def killed(self, filename, *args, **kwargs):
        Path(filename).write_bytes(b"")  # the 0-byte PNG a kill used to leave
        raise KeyboardInterrupt

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", killed)
    with pytest.raises(KeyboardInterrupt):
        plotting.save_figure(figure, tmp_path / "curve.png")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writers_temporary_is_removed_by_the_next_write_of_that_file(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".digits.{dead.stdout.strip()}-0a1b2c3d.partial.png"
    stale.write_bytes(b"x" * 1000)  # what a SIGKILL in the middle of `generate` leaves
    mine = tmp_path / f".digits.{os.getpid()}-0a1b2c3d.partial.png"
    mine.write_bytes(b"a live writer's")
    files.write_bytes(tmp_path / "digits.png", b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["digits.png", mine.name])


TWO_WRITERS = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("files", sys.argv[3])  # vae_keras.files alone: no Keras to start
files = importlib.util.module_from_spec(spec)
spec.loader.exec_module(files)
tag, path = sys.argv[1], sys.argv[2]
def slow(temporary):
    with open(temporary, "wb") as handle:
        for _ in range(20):
            handle.write(tag.encode() * 50_000)
            handle.flush()
            time.sleep(0.02)
files.write_atomically(path, slow)
print("saved", tag)
"""


def test_two_writers_of_one_file_never_mix_their_bytes(tmp_path):
    # A fixed temporary name was shared: the second writer's bytes went into the
    # first's file, and one of them failed on a temporary the other had renamed.
    path = tmp_path / "same.png"
    writers = [
        subprocess.Popen([sys.executable, "-c", TWO_WRITERS, tag, str(path), files.__file__], stdout=subprocess.PIPE, text=True)
        for tag in "AB"
    ]
    outputs = [writer.communicate(timeout=120)[0] for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], outputs
    content = path.read_bytes()
    assert content in (b"A" * 1_000_000, b"B" * 1_000_000)  # one writer's file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.png"]


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs (a real full disk), of the size a test asks for: `tmpfs(8)` is 8 MB."""
    mounted = []

    def mount(megabytes):
        mount_point = tmp_path / f"disk{len(mounted)}"
        mount_point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(mount_point)],
                                capture_output=True, text=True)
        if result.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'needs root'})")
        mounted.append(mount_point)
        return mount_point

    yield mount
    for mount_point in mounted:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_a_full_disk_during_a_checkpoint_is_one_error_and_leaves_no_partial_folder(tmpfs, model):
    # h5py used to meet the full disk itself: an error, then its traceback, then a segmentation fault.
    folder = RunFolder(tmpfs(2) / "run")
    folder.path.mkdir()
    with pytest.raises(OSError, match="No space left on device while writing .*epoch-0001/vae.keras") as error_info:
        write_epochs(folder, model, 1)
    assert error_info.value.errno == errno.ENOSPC
    assert list((folder.path / "checkpoint").iterdir()) == []


def test_a_killed_writers_partial_checkpoint_does_not_block_the_resume_on_a_tight_disk(tmpfs, model):
    # 8 MB: room for the last checkpoint and the next one (3.2 MB each), not for a third
    # 3.2 MB partial folder that a SIGKILL in the middle of a write leaves behind.
    folder = RunFolder(tmpfs(8) / "run")
    folder.path.mkdir()
    write_epochs(folder, model, 1)
    partial = folder.path / "checkpoint" / ".partial-0002-99999999-0a1b2c3d"
    partial.mkdir()
    (partial / "vae.keras").write_bytes((folder.path / "vae.keras").read_bytes())
    checkpoint = folder.check(IDENTITY)
    folder.start(IDENTITY, checkpoint)  # under the run's lock no other writer lives: partials are removed
    write_epochs(folder, model, 2, first=2)
    assert folder.check(IDENTITY).epoch == 2



@pytest.mark.skipif(not Path("/proc/self/statm").is_file(), reason="reads the resident memory from /proc")
def test_a_checkpoint_write_keeps_no_memory(model):
    """Keras' own save kept about 72 KB a call (1.6 GB after 4,000 epochs): the reference objects it rebuilt."""

    def resident_kb():
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024

    for _ in range(10):  # warm-up: Keras' caches and the allocator's first pages
        run_folder.model_bytes(model)
    start = resident_kb()
    for _ in range(100):
        run_folder.model_bytes(model)
    assert (resident_kb() - start) / 100 < 25  # 72 before the fix, 3.4 after (benchmarks/checkpoint_memory.py)
