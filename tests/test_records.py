"""Tests for vae_keras.records: the run folder's files, written whole or not at all."""

import subprocess
import sys
from pathlib import Path

import pytest

import vae_keras
from vae_keras import plotting, records


def test_read_history_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        records.read_history(tmp_path / "nothing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="bad.csv"):
        records.read_history(bad)


def test_the_model_file_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    model = vae_keras.VAE(latent_dim=2, seed=0)
    path = tmp_path / "vae.keras"
    records.save_model(model, path)
    before = path.read_bytes()

    def dies_half_way(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as handle:
            handle.write(before[: len(before) // 2])
        raise KeyboardInterrupt  # a kill while the file is written

    monkeypatch.setattr(vae_keras.VAE, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        records.save_model(model, path)
    assert path.read_bytes() == before  # the last good model is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vae.keras"]  # no partial file left


def test_a_full_disk_in_any_atomic_write_is_one_error_naming_the_file(tmp_path):
    import errno

    path = tmp_path / "history.csv"
    path.write_text("epoch\n0\n")

    def disk_full(temporary):
        Path(temporary).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=f"No space left on device while writing {path}") as error_info:
        records.write_atomically(path, disk_full)
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


@pytest.fixture
def two_megabyte_disk(tmp_path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'needs root'})")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=False)


STATE_ON_A_FULL_DISK = """
import sys
from vae_keras import VAEConfig, backends, records, training
model = training.build_model(VAEConfig())
model.optimizer.build(model.trainable_variables)
try:
    records.write_checkpoint(model, sys.argv[1], 1, [{"epoch": 0}], records.run_identity(VAEConfig(), backends.BACKEND))
except OSError as error:
    print("error:", error)
"""


def test_a_disk_too_full_for_the_state_file_is_an_error_not_a_crash(two_megabyte_disk):
    # h5py itself dies with a segmentation fault when the disk fills in the middle of its write.
    process = subprocess.run([sys.executable, "-c", STATE_ON_A_FULL_DISK, str(two_megabyte_disk)],
                             capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-2000:]
    expected = two_megabyte_disk / "checkpoint" / "epoch-0001" / "state.weights.h5"
    assert f"error: [Errno 28] No space left on device for {expected}: it needs about 3.5 MB" in process.stdout
    assert list((two_megabyte_disk / "checkpoint").iterdir()) == []  # no partial folder left


def test_a_history_that_is_binary_or_has_broken_rows_is_named_with_its_line(tmp_path):
    binary = tmp_path / "binary.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=f"{binary} is not a training history .a CSV text file"):
        records.read_history(binary)
    broken = tmp_path / "broken.csv"
    broken.write_text("epoch,elbo,val_elbo\n0,30.1,28.0\n1,27.5\n")
    with pytest.raises(ValueError, match=f"{broken}, line 3: not a row of the history"):
        records.read_history(broken)
    words = tmp_path / "words.csv"
    words.write_text("epoch,elbo\n0,thirty\n")
    with pytest.raises(ValueError, match=f"{words}, line 2: elbo='thirty' is not a number"):
        records.read_history(words)
