"""What a training run leaves on disk, read and written whole, and the reference's published numbers.

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

from vae_keras.config import VAEConfig

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

HISTORY_FILE = "history.csv"
MODEL_FILE = "vae.keras"
CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
# Folder of the last finished epoch's checkpoint (and, in older runs, Keras' backup).
CHECKPOINT_DIR = "checkpoint"
LEGACY_BACKUP_DIR = "backup"

# The reference's published test ELBO loss per epoch (MATLAB, GPU), epochs 1..50.
REFERENCE_TEST_ELBO = (
    28.0145, 24.8995, 23.2756, 21.151, 20.5335, 20.232, 19.9988, 19.8955, 19.7991, 19.6773,
    19.5181, 19.4532, 19.3771, 19.2893, 19.1641, 19.2175, 19.158, 19.085, 19.1169, 19.0791,
    19.0395, 18.9556, 18.9469, 18.924, 18.9124, 18.9595, 18.9256, 18.8708, 18.8602, 18.8563,
    18.8127, 18.7989, 18.8, 18.8095, 18.7601, 18.7469, 18.7049, 18.7084, 18.6858, 18.7284,
    18.6574, 18.6388, 18.7133, 18.6846, 18.6001, 18.5897, 18.6184, 18.6389, 18.5918, 18.5081,
)  # fmt: skip
CHECKPOINT_STATE = "state.weights.h5"
CHECKPOINT_META = "meta.json"
# The model trained with the reference protocol that ships with the project, and its history.
PRETRAINED_MODEL_PATH = Path(__file__).resolve().parent.parent / "models" / "vae_mnist.keras"
PRETRAINED_HISTORY_PATH = PRETRAINED_MODEL_PATH.with_name("vae_mnist_history.csv")


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
    _fsync_file(partial / CHECKPOINT_STATE)
    _write_synced(partial / CHECKPOINT_META, json.dumps(meta, indent=1).encode())
    _fsync_file(partial)
    shutil.rmtree(final, ignore_errors=True)  # only a rerun of the same epoch has one
    os.rename(partial, final)
    _fsync_file(root)
    for old in root.iterdir():
        if old != final:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(output_dir):
    """The newest complete checkpoint of a run: `(folder, meta)`, or None.

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
    return folder, meta


def write_history(path, rows):
    """Writes the per-epoch rows as `history.csv` (as Keras' CSVLogger lays it out), atomically."""
    columns = ["epoch", *sorted({name for row in rows for name in row} - {"epoch"})]
    lines = [",".join(columns)]
    lines += [",".join(str(row.get(name, "")) for name in columns) for row in rows]
    _write_synced(path, ("\n".join(lines) + "\n").encode(), atomic=True)


def _write_synced(path, data, atomic=False):
    """Writes `data` to `path` and flushes it to disk; `atomic`: through a temporary file and a rename."""
    path = Path(path)
    target = path.with_name(f".{path.name}.partial") if atomic else path
    with open(target, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    if atomic:
        os.replace(target, path)


def _fsync_file(path):
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
        The folder's latest checkpoint, `(folder, meta)`, to resume from, or None.

    Raises:
        FileExistsError: when the folder holds a finished run, or an
            interrupted one with another configuration (or of an older vae_keras).
        ValueError: when its checkpoint or `config.json` is damaged, or the
            checkpoint is past `config.epochs` (the message names the file).
    """
    output_dir = Path(output_dir)
    config_path = output_dir / CONFIG_FILE
    config_json = dataclasses.asdict(config)
    if overwrite:
        for name in (HISTORY_FILE, MODEL_FILE, CONFIG_FILE):
            (output_dir / name).unlink(missing_ok=True)
        for name in (CHECKPOINT_DIR, LEGACY_BACKUP_DIR):
            shutil.rmtree(output_dir / name, ignore_errors=True)
    if (output_dir / LEGACY_BACKUP_DIR).exists():
        raise FileExistsError(
            f"{output_dir} holds an interrupted run of an older vae_keras (its "
            f"{LEGACY_BACKUP_DIR}/ folder), which this version cannot resume; finish it with "
            f"that version, or {START_AFRESH}"
        )
    latest = latest_checkpoint(output_dir)  # a damaged checkpoint is an error naming its file
    saved = _read_config(config_path) if config_path.exists() else None
    if latest is not None:
        if latest[1]["epoch"] > config.epochs:
            raise ValueError(
                f"{latest[0] / CHECKPOINT_META} records epoch {latest[1]['epoch']}, past this run's "
                f"{config.epochs} epochs; it belongs to another run. Choose another output folder, "
                f"or {START_AFRESH}"
            )
        if latest[1].get("finished"):
            raise _finished_run(output_dir)
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
    elif saved is not None and _finished_before_checkpoints(output_dir, saved, config):
        raise _finished_run(output_dir)
    elif verbose and saved is not None:
        print(
            f"{output_dir} holds an unfinished run with no finished epoch to resume from "
            "(stopped in its first epoch, or by a NaN loss): training starts again from epoch 1."
        )
    _write_synced(config_path, (json.dumps(config_json, indent=2) + "\n").encode(), atomic=True)
    if latest is not None:
        # The history is the checkpoint's, whatever a kill left in history.csv.
        write_history(output_dir / HISTORY_FILE, latest[1]["history"])
    return latest


# How every message about a run folder that cannot be resumed ends.
START_AFRESH = "pass overwrite=True (--overwrite) to start afresh."


def _finished_run(output_dir):
    return FileExistsError(
        f"{output_dir} already holds a finished run ({output_dir / MODEL_FILE}); choose another "
        "output folder or pass overwrite=True (--overwrite) to replace it."
    )


def _finished_before_checkpoints(output_dir, saved, config):
    """A run made before checkpoints recorded `finished`: its model, and a history row for each of its epochs."""
    epochs = saved["epochs"] if isinstance(saved.get("epochs"), int) else config.epochs
    if not (output_dir / MODEL_FILE).is_file():
        return False
    try:
        return len(read_history(output_dir / HISTORY_FILE)["epoch"]) >= epochs
    except (OSError, ValueError):
        return False


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
