"""What a training run leaves on disk, every file written whole or not at all.

A run folder holds `config.json`, `history.csv` (one row per finished epoch),
`vae.keras` (the model after the last finished epoch), `checkpoint/epoch-NNNN/`
(that epoch's model and optimizer state, with `meta.json`) and `.lock`. Every
file is written through a temporary name and a rename, flushed to disk, so a
kill at any moment leaves the old version or the new one, never a mix.
"""

import contextlib
import csv
import dataclasses
import json
import os
import shutil
from pathlib import Path

from vae_keras.config import PRETRAINED_HISTORY_PATH, VAEConfig

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

HISTORY_FILE = "history.csv"
MODEL_FILE = "vae.keras"
CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
# Folder of the last finished epoch's checkpoint, `checkpoint/epoch-NNNN/`, and its two files.
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_STATE = "state.weights.h5"
CHECKPOINT_META = "meta.json"
# How every message about a run folder that cannot be resumed ends.
START_AFRESH = "pass overwrite=True (--overwrite) to start afresh."


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A finished epoch's checkpoint, as `latest_checkpoint` reads it.

    Attributes:
        folder: its folder, `RUN/checkpoint/epoch-NNNN`.
        epoch: the number of epochs finished.
        finished: whether it is the run's last epoch.
        history: the history rows of every finished epoch, `epoch` 0-based.
    """

    folder: Path
    epoch: int
    finished: bool
    history: list

    @property
    def state(self):
        """The file of the model's and the optimizer's state."""
        return self.folder / CHECKPOINT_STATE


def read_history(path):
    """Reads a run's `history.csv` into a dict of columns, `epoch` counted from 1.

    Args:
        path: the CSV file.

    Returns:
        A dict mapping each column name to a list of floats (ints for `epoch`).

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the file is not a training history.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No training history at {path}")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "epoch" not in rows[0]:
        raise ValueError(f"{path} is not a training history: it has no 'epoch' column")
    columns = {name: [] for name in (rows[0] if rows else ["epoch"])}
    for row in rows:
        for name in columns:
            value = row.get(name, "")
            if name == "epoch":
                columns[name].append(int(value) + 1)
            else:
                columns[name].append(float(value) if value not in ("", None) else float("nan"))
    return columns


def history_beside(model_path):
    """The history of a model file, if it exists: the pretrained model's (`model_path` None) or `RUN/history.csv` beside `RUN/vae.keras`; else None."""
    path = PRETRAINED_HISTORY_PATH if model_path is None else Path(model_path).with_name(HISTORY_FILE)
    return path if path.is_file() else None


def write_checkpoint(model, output_dir, meta):
    """Writes `checkpoint/epoch-NNNN/` whole, under a temporary name first, then drops older ones."""
    root = Path(output_dir) / CHECKPOINT_DIR
    root.mkdir(exist_ok=True)
    final = root / f"epoch-{meta['epoch']:04d}"
    partial = root / f".partial-{meta['epoch']:04d}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    model.save_weights(partial / CHECKPOINT_STATE)
    _fsync(partial / CHECKPOINT_STATE)
    (partial / CHECKPOINT_META).write_text(json.dumps(meta, indent=1))  # the folder's rename makes it whole
    _fsync(partial / CHECKPOINT_META)
    _fsync(partial)
    shutil.rmtree(final, ignore_errors=True)  # only a rerun of the same epoch has one
    os.rename(partial, final)
    _fsync(root)
    for old in root.iterdir():
        if old != final:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(output_dir):
    """The newest complete checkpoint of a run, a `Checkpoint`, or None.

    Raises:
        ValueError: when the newest checkpoint folder is not a readable
            checkpoint (the message names the file).
    """
    root = Path(output_dir) / CHECKPOINT_DIR
    folders = sorted(root.glob("epoch-[0-9][0-9][0-9][0-9]")) if root.is_dir() else []
    if not folders:
        return None
    folder = folders[-1]
    meta_path = folder / CHECKPOINT_META
    try:
        meta = json.loads(meta_path.read_text())
        valid = (
            isinstance(meta, dict)
            and isinstance(meta.get("epoch"), int)
            and isinstance(meta.get("history"), list)
            and len(meta["history"]) == meta["epoch"]
            and (folder / CHECKPOINT_STATE).is_file()
        )
    except (OSError, ValueError) as error:
        valid, meta = False, str(error)
    if not valid:
        raise ValueError(
            f"{meta_path} is not a readable checkpoint ({meta if isinstance(meta, str) else 'unexpected content'}); "
            f"it was not written by vae_keras or was changed since. Restore the folder, or {START_AFRESH}"
        )
    return Checkpoint(folder, meta["epoch"], bool(meta.get("finished")), meta["history"])


def write_history(path, rows):
    """Writes the per-epoch rows as `history.csv` (as Keras' CSVLogger lays it out), atomically."""
    columns = ["epoch", *sorted({name for row in rows for name in row} - {"epoch"})]
    lines = [",".join(columns)]
    lines += [",".join(str(row.get(name, "")) for name in columns) for row in rows]
    write_atomically(path, _writes_bytes(("\n".join(lines) + "\n").encode()))


def save_model(model, path):
    """Saves a Keras model to a `.keras` file atomically: a kill leaves the old file whole."""
    write_atomically(path, model.save)


def write_atomically(path, write):
    """Writes a file whole or not at all.

    `write(temporary)` writes the content to a temporary file beside `path`
    (same suffix, so that Keras and Matplotlib recognise the format); it is
    flushed to disk and renamed onto `path` in one step, so a kill at any
    moment leaves the old file or the new one. Returns `path`.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        write(temporary)
        _fsync(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync(path.parent)
    return path


def _writes_bytes(data):
    """A `write` for `write_atomically` that writes `data`."""
    return lambda temporary: Path(temporary).write_bytes(data)


def _fsync(path):
    """Flushes a file's or a folder's entry to disk (no-op where a folder cannot be opened)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def locked(output_dir):
    """Holds an exclusive lock on the run folder (its `.lock`) for the block; the system drops it if the process dies.

    Raises:
        RuntimeError: when another process holds the folder (the message
            gives its pid).
    """
    if fcntl is None:  # Windows: no advisory locks, no check
        yield
        return
    with open(Path(output_dir) / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RuntimeError(
                f"{output_dir} is in use by another training ({holder}); wait for it to end, "
                "or choose another output folder."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare(output_dir, config, overwrite=False, verbose=True):
    """Checks a run folder against `config` and writes its `config.json`.

    Args:
        output_dir: the run folder (it exists).
        config: the `VAEConfig` of the run about to start.
        overwrite: delete what the folder holds from an earlier run first.
        verbose: say so when an unfinished run restarts from epoch 1.

    Returns:
        The folder's latest `Checkpoint` to resume from, or None.

    Raises:
        FileExistsError: when the folder holds a finished run, or an
            interrupted one with another configuration.
        ValueError: when its checkpoint or `config.json` is damaged, or the
            checkpoint is past `config.epochs` (the message names the file).
    """
    output_dir = Path(output_dir)
    config_path = output_dir / CONFIG_FILE
    config_json = dataclasses.asdict(config)
    if overwrite:
        for name in (HISTORY_FILE, MODEL_FILE, CONFIG_FILE):
            (output_dir / name).unlink(missing_ok=True)
        shutil.rmtree(output_dir / CHECKPOINT_DIR, ignore_errors=True)
    latest = latest_checkpoint(output_dir)  # a damaged checkpoint is an error naming its file
    saved = _read_config(config_path) if config_path.exists() else None
    if latest is not None:
        if latest.epoch > config.epochs:
            raise ValueError(
                f"{latest.folder / CHECKPOINT_META} records epoch {latest.epoch}, past this run's "
                f"{config.epochs} epochs; it belongs to another run. Choose another output folder, "
                f"or {START_AFRESH}"
            )
        if latest.finished:
            raise FileExistsError(
                f"{output_dir} already holds a finished run ({output_dir / MODEL_FILE}); choose another "
                "output folder or pass overwrite=True (--overwrite) to replace it."
            )
        if saved is not None:
            # A field the saved run predates counts as holding its default.
            defaults = dataclasses.asdict(VAEConfig())
            differing = sorted(k for k in config_json if saved.get(k, defaults[k]) != config_json[k])
            if differing:
                raise FileExistsError(
                    f"{output_dir} holds an interrupted run with another configuration "
                    f"(differs in {', '.join(differing)}); resume it with the same "
                    f"settings, choose another output folder, or {START_AFRESH}"
                )
    elif verbose and saved is not None:
        print(
            f"{output_dir} holds an unfinished run with no finished epoch to resume from "
            "(stopped in its first epoch, or by a NaN loss): training starts again from epoch 1."
        )
    write_atomically(config_path, _writes_bytes((json.dumps(config_json, indent=2) + "\n").encode()))
    if latest is not None:
        # The history is the checkpoint's, whatever a kill left in history.csv.
        write_history(output_dir / HISTORY_FILE, latest.history)
    return latest


def _read_config(config_path):
    """The configuration a run folder holds, as a dict; a clear error for anything else."""
    try:
        saved = json.loads(config_path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{config_path} is not valid JSON ({error}); it is not a run's configuration. "
            f"Choose another output folder, or {START_AFRESH}"
        ) from None
    if not isinstance(saved, dict):
        raise ValueError(
            f"{config_path} holds a JSON {type(saved).__name__}, not a run's configuration. "
            f"Choose another output folder, or {START_AFRESH}"
        )
    return saved
