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
import errno
import hashlib
import json
import math
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
# The layout of a checkpoint's meta.json; another one is refused, not guessed at.
CHECKPOINT_FORMAT = 2
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
        identity: what made the run, fixed at its first epoch (`run_identity`).
    """

    folder: Path
    epoch: int
    finished: bool
    history: list
    identity: dict

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
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path} is not a training history (a CSV text file): {error}") from None
    if rows and "epoch" not in rows[0]:
        raise ValueError(f"{path} is not a training history: it has no 'epoch' column")
    columns = {name: [] for name in (rows[0] if rows else ["epoch"])}
    for line, row in enumerate(rows, start=2):
        if None in row or None in row.values():
            raise ValueError(f"{path}, line {line}: not a row of the history (its number of fields differs from the header's)")
        for name in columns:
            value = row[name]
            try:
                if name == "epoch":
                    columns[name].append(int(value) + 1)
                else:
                    columns[name].append(float(value) if value != "" else float("nan"))
            except ValueError:
                raise ValueError(f"{path}, line {line}: {name}={value!r} is not a number") from None
    return columns


def history_beside(model_path):
    """The history of a model file, if it exists: the pretrained model's (`model_path` None) or `RUN/history.csv` beside `RUN/vae.keras`; else None."""
    path = PRETRAINED_HISTORY_PATH if model_path is None else Path(model_path).with_name(HISTORY_FILE)
    return path if path.is_file() else None


def run_identity(config, backend):
    """What fixes a run's numbers, recorded in each checkpoint and checked on resume: the format, the backend, the configuration."""
    return {"format": CHECKPOINT_FORMAT, "backend": backend, "config": dataclasses.asdict(config)}


def write_checkpoint(model, output_dir, epoch, history, identity):
    """Writes `checkpoint/epoch-NNNN/` whole (state, then meta.json with its digests), then drops older ones.

    The folder is written under a temporary name, flushed, and renamed into
    place in one step; meta.json records the SHA-256 of the state file, the
    run's identity, and a digest of itself, all checked by `latest_checkpoint`.
    """
    root = Path(output_dir) / CHECKPOINT_DIR
    root.mkdir(exist_ok=True)
    final = root / f"epoch-{epoch:04d}"
    partial = root / f".partial-{epoch:04d}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    state = partial / CHECKPOINT_STATE
    try:
        _save_weights(model, state, final / CHECKPOINT_STATE)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _fsync(state)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "finished": epoch >= identity["config"]["epochs"],
        "history": history,
        "identity": identity,
        "files": {CHECKPOINT_STATE: _sha256(state)},
    }
    meta["digest"] = _digest(meta)
    _checked_write(final / CHECKPOINT_META, lambda: (partial / CHECKPOINT_META).write_text(json.dumps(meta, indent=1)))
    _fsync(partial / CHECKPOINT_META)
    _fsync(partial)
    shutil.rmtree(final, ignore_errors=True)  # only a rerun of the same epoch has one
    os.rename(partial, final)
    _fsync(root)
    for old in root.iterdir():
        if old != final:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(output_dir):
    """The newest checkpoint of a run, verified, as a `Checkpoint`; None when there is none.

    Before anything is loaded: meta.json must be whole (its digest), of this
    format, consistent (epochs, rows, finished), and the state file must have
    the SHA-256 it recorded.

    Raises:
        ValueError: naming the file at fault and what is wrong with it.
    """
    root = Path(output_dir) / CHECKPOINT_DIR
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root} is a file, not a checkpoint folder. Move it away, or {START_AFRESH}")
    folders = sorted(root.glob("epoch-[0-9][0-9][0-9][0-9]")) if root.is_dir() else []
    if not folders:
        return None
    folder = folders[-1]
    meta_path, state = folder / CHECKPOINT_META, folder / CHECKPOINT_STATE
    if not meta_path.is_file():
        raise ValueError(f"{meta_path} is missing: the checkpoint cannot be verified. Restore it, or {START_AFRESH}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(_damaged(meta_path, f"not readable JSON: {error}")) from None
    problem = _meta_problem(meta, folder)
    if problem:
        raise ValueError(_damaged(meta_path, problem))
    if not state.is_file():
        raise ValueError(f"{state} is missing from the checkpoint. Restore it, or {START_AFRESH}")
    if _sha256(state) != meta["files"][CHECKPOINT_STATE]:
        raise ValueError(_damaged(state, f"its SHA-256 is not the one {meta_path.name} recorded"))
    return Checkpoint(folder, meta["epoch"], meta["finished"], meta["history"], meta["identity"])


def identity_differences(saved, identity):
    """The names of what differs between a checkpoint's identity and a new run's: "backend" and config fields."""
    defaults = dataclasses.asdict(VAEConfig())
    saved_config = saved.get("config", {})
    # A field the saved run predates counts as holding its default.
    differing = [
        f"{name} (the run: {saved_config.get(name, defaults[name])!r}, now: {value!r})"
        for name, value in identity["config"].items()
        if saved_config.get(name, defaults.get(name)) != value
    ]
    if saved.get("backend") != identity["backend"]:
        differing.insert(0, f"backend (the run: {saved.get('backend')!r}, now: {identity['backend']!r})")
    return differing


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
    """Writes a file whole or not at all; a full disk is an `OSError` naming the file.

    `write(temporary)` writes the content to a temporary file beside `path`
    (same suffix, so that Keras and Matplotlib recognise the format); it is
    flushed to disk and renamed onto `path` in one step, so a kill at any
    moment leaves the old file or the new one. Returns `path`.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        _checked_write(path, lambda: write(temporary))
        _fsync(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync(path.parent)
    return path


def _checked_write(path, write):
    """Runs `write()`; a full disk or another write error becomes one `OSError` that names `path`."""
    try:
        write()
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"No space left on device while writing {path}; free some space "
                          "and run the same command again") from None
        raise OSError(error.errno, f"Could not write {path}: {error.strerror or error}") from None


def _save_weights(model, state, name):
    """`model.save_weights(state)` behind a free-space check: h5py may crash, not raise, on a full disk."""
    needed = 64 * 1024 + 1.1 * sum(
        int(math.prod(variable.shape)) * _itemsize(variable.dtype)
        for variable in [*model.variables, *(model.optimizer.variables if model.optimizer else [])]
    )
    free = shutil.disk_usage(state.parent).free
    if free < needed:
        raise OSError(
            errno.ENOSPC, f"No space left on device for {name}: it needs about {needed / 1e6:.1f} MB and "
            f"{free / 1e6:.1f} MB are free; free some space and run the same command again"
        )
    try:
        model.save_weights(state)
    except OSError as error:
        raise OSError(error.errno, f"Could not write {name}: {error}") from None


def _itemsize(dtype):
    """Bytes per element of a Keras dtype name ("float32": 4)."""
    digits = "".join(character for character in str(dtype) if character.isdigit())
    return max(1, int(digits) // 8) if digits else 8


def _sha256(path):
    """The SHA-256 of a file, in hex, read in 1 MB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for piece in iter(lambda: handle.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def _digest(meta):
    """The SHA-256 of a meta dict without its "digest", as canonical JSON."""
    content = {key: value for key, value in meta.items() if key != "digest"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _meta_problem(meta, folder):
    """What is wrong with a checkpoint's meta dict, or None."""
    if not isinstance(meta, dict):
        return f"a JSON {type(meta).__name__}, not a checkpoint's metadata"
    if meta.get("format") != CHECKPOINT_FORMAT:
        return f"format {meta.get('format')!r}, not {CHECKPOINT_FORMAT}: written by another version of vae_keras"
    if meta.get("digest") != _digest(meta):
        return "its content does not match the digest it was written with: it was edited or damaged"
    epoch, history, identity = meta.get("epoch"), meta.get("history"), meta.get("identity")
    if not (isinstance(epoch, int) and isinstance(history, list) and isinstance(identity, dict)):
        return "epoch, history or identity missing"
    if folder.name != f"epoch-{epoch:04d}" or len(history) != epoch:
        return f"it records epoch {epoch} with {len(history)} history rows, in folder {folder.name}"
    if [row.get("epoch") if isinstance(row, dict) else None for row in history] != list(range(epoch)):
        return f"its history rows are not epochs 0 to {epoch - 1} in order"
    epochs = identity.get("config", {}).get("epochs")
    if not isinstance(epochs, int) or meta.get("finished") is not (epoch >= epochs):
        return f"finished={meta.get('finished')!r} does not follow from epoch {epoch} of {epochs}"
    if not isinstance(meta.get("files"), dict) or CHECKPOINT_STATE not in meta["files"]:
        return f"no digest of {CHECKPOINT_STATE}"
    return None


def _damaged(path, problem):
    return (
        f"{path} is not a valid checkpoint ({problem}); nothing was loaded or overwritten. "
        f"Restore the folder, choose another output folder, or {START_AFRESH}"
    )


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


def prepare(output_dir, config, identity, overwrite=False, verbose=True):
    """Checks a run folder against the run about to start, rebuilds its history, writes its `config.json`.

    Args:
        output_dir: the run folder (it exists).
        config: the `VAEConfig` of the run about to start.
        identity: its `run_identity`.
        overwrite: delete what the folder holds from an earlier run first.
        verbose: say so when an unfinished run restarts from epoch 1.

    Returns:
        The folder's latest `Checkpoint` (finished or not), or None.

    Raises:
        FileExistsError: the checkpoint's run differs from this one (configuration
            or backend), or the folder holds run files without a checkpoint.
        ValueError: a damaged checkpoint or `config.json` (the message names the file).
    """
    output_dir = Path(output_dir)
    config_path = output_dir / CONFIG_FILE
    if overwrite:
        for name in (HISTORY_FILE, MODEL_FILE, CONFIG_FILE):
            (output_dir / name).unlink(missing_ok=True)
        target = output_dir / CHECKPOINT_DIR
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
    latest = latest_checkpoint(output_dir)  # verified; a damaged one is an error naming its file
    if latest is not None:
        differing = identity_differences(latest.identity, identity)
        if differing:
            raise FileExistsError(
                f"{output_dir} holds a run with another configuration: {'; '.join(differing)} "
                f"(recorded in {latest.folder / CHECKPOINT_META}). Resume it with the same settings"
                + (f" and KERAS_BACKEND={latest.identity['backend']}" if differing[0].startswith("backend") else "")
                + f", choose another output folder, or {START_AFRESH}"
            )
        # Everything that can be rebuilt from the checkpoint is: a kill may have left the history behind.
        write_history(output_dir / HISTORY_FILE, latest.history)
        if latest.finished:
            return latest
    else:
        if config_path.exists():
            _read_config(config_path)  # a damaged one is an error naming it
        leftovers = [name for name in (HISTORY_FILE, MODEL_FILE) if (output_dir / name).exists()]
        if (output_dir / HISTORY_FILE).exists() or (leftovers and not config_path.exists()):
            raise FileExistsError(
                f"{output_dir} holds {' and '.join(leftovers)} but no {CHECKPOINT_DIR}/ to resume from (deleted, "
                f"or not a vae_keras run); training here would replace them. Choose another output folder, "
                f"or {START_AFRESH}"
            )
        if verbose and config_path.exists():
            print(
                f"{output_dir} holds an unfinished run with no finished epoch to resume from "
                "(stopped in its first epoch, or by a NaN loss): training starts again from epoch 1."
            )
    write_atomically(config_path, _writes_bytes((json.dumps(identity["config"], indent=2) + "\n").encode()))
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
