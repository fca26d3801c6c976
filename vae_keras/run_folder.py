"""A training run's folder: checked before anything is written, each finished epoch written once, whole or not at all.

    RUN/config.json                     the run's settings, for people to read
    RUN/history.csv                     one row per finished epoch
    RUN/vae.keras                       the model after the last finished epoch
    RUN/checkpoint/epoch-NNNN/          that epoch: vae.keras (model and Adam's state), meta.json
    RUN/.lock                           held while a training runs

`vae_keras.train` calls `check` (a damaged, foreign or edited checkpoint is refused, naming the file; nothing is
written), `restore`, then `start`, and `EpochWriter` writes each finished epoch. A kill at any moment leaves a folder
that the same command resumes, to the numbers of an uninterrupted run (docs/crash-safety.md).
"""

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import os
import secrets
import shutil
from pathlib import Path

import keras
import numpy as np
from keras import ops
from keras.src.backend.common import global_state
from keras.src.saving import saving_lib

from vae_keras.config import PRETRAINED_HISTORY_PATH, VAEConfig
from vae_keras.files import checked_write, fsync, link_or_copy, write_bytes

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

HISTORY_FILE = "history.csv"
MODEL_FILE = "vae.keras"
CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_META = "meta.json"
# The layout of a checkpoint's meta.json; another one is refused, not guessed at.
CHECKPOINT_FORMAT = 3
# How every message about a run folder that cannot be resumed ends.
START_AFRESH = "pass overwrite=True (--overwrite) to start afresh."


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A finished epoch's checkpoint, verified by `RunFolder.check`: its folder `RUN/checkpoint/epoch-NNNN`, the
    epochs finished, the history rows of each (`epoch` 0-based) and what made the run (`run_identity`)."""

    folder: Path
    epoch: int
    history: list
    identity: dict

    @property
    def model_file(self):  # the model and the optimizer after this epoch
        return self.folder / MODEL_FILE


def run_identity(config, backend, data=None):
    """What fixes a run's numbers, recorded in each checkpoint and checked on resume: the format, the backend, the
    configuration (as JSON reads it back) and the SHA-256 of the images it trains and is tested on (from `data`,
    `((x_train, y_train), (x_test, y_test))`; None: not recorded)."""
    digest = None
    if data is not None:
        hashed = hashlib.sha256()
        for x in (data[0][0][: config.train_size], data[1][0][: config.test_size]):
            hashed.update(str(x.shape).encode())
            hashed.update(np.ascontiguousarray(x).data)
        digest = hashed.hexdigest()
    identity = {"format": CHECKPOINT_FORMAT, "backend": backend, "config": dataclasses.asdict(config), "data": digest}
    return json.loads(json.dumps(identity))


class RunFolder:
    """The files of one training run in the folder `path` (created if missing)."""

    def __init__(self, path):
        self.path = Path(path)

    def __truediv__(self, name):
        return self.path / name

    @contextlib.contextmanager
    def locked(self):
        """Holds an exclusive lock on the folder (its `.lock`) for the block; the system drops it if the process dies.
        A RuntimeError when another process holds it gives that process's pid."""
        self.path.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # Windows: no advisory locks, no check
            yield
            return
        with open(self / LOCK_FILE, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise RuntimeError(f"{self.path} is in use by another training ({holder}); wait for it to end, or "
                                   "choose another output folder.") from None
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

    def check(self, identity, overwrite=False):
        """Checks the folder against the run about to start; returns its last `Checkpoint`, or None. Writes nothing.

        The checkpoint must be whole (meta.json's digest, the model file's SHA-256), of this format, and of the same
        run: the same backend and configuration, except that `epochs` may be more than it has finished (the run then
        carries on). `overwrite` first deletes an earlier run's files.

        Raises:
            FileExistsError: another run's checkpoint (the differing fields named), or run files without one.
            ValueError: a damaged checkpoint or config.json (named).
        """
        if overwrite:
            for name in (HISTORY_FILE, MODEL_FILE, CONFIG_FILE):
                (self / name).unlink(missing_ok=True)
            target = self / CHECKPOINT_DIR
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        latest = self.latest_checkpoint()
        if latest is None:
            leftovers = [name for name in (HISTORY_FILE, MODEL_FILE) if (self / name).exists()]
            if (self / CONFIG_FILE).exists():
                _read_json(self / CONFIG_FILE, "a run's configuration")  # a damaged one is an error naming it
            if (self / HISTORY_FILE).exists() or (leftovers and not (self / CONFIG_FILE).exists()):
                raise FileExistsError(f"{self.path} holds {' and '.join(leftovers)} but no {CHECKPOINT_DIR}/ to "
                                      "resume from (deleted, or not a vae_keras run); training here would replace "
                                      f"them. Choose another output folder, or {START_AFRESH}")
            return None
        differing = _differences(latest.identity, identity)
        if differing:
            backend = f" and KERAS_BACKEND={latest.identity['backend']}" if differing[0].startswith("backend") else ""
            raise FileExistsError(f"{self.path} holds a run with another configuration: {'; '.join(differing)} "
                                  f"(recorded in {latest.folder / CHECKPOINT_META}). Resume it with the same "
                                  f"settings{backend}, choose another output folder, or {START_AFRESH}")
        epochs = identity["config"]["epochs"]
        if epochs < latest.epoch:
            raise FileExistsError(f"{self.path} holds a run of {latest.epoch} finished epochs, more than "
                                  f"epochs={epochs}: ask for {latest.epoch} or more to load or extend it, choose "
                                  f"another output folder, or {START_AFRESH}")
        return latest

    def latest_checkpoint(self):
        """The newest checkpoint, verified, as a `Checkpoint`; None when there is none; a damaged one is a
        ValueError naming the file at fault and what is wrong with it."""
        root = self / CHECKPOINT_DIR
        if root.exists() and not root.is_dir():
            raise ValueError(f"{root} is a file, not a checkpoint folder. Move it away, or {START_AFRESH}")
        folders = [path for path in root.glob("epoch-*") if path.name[6:].isdigit()] if root.is_dir() else []
        if not folders:
            return None
        folder = max(folders, key=lambda path: int(path.name[6:]))
        meta_path, model_file = folder / CHECKPOINT_META, folder / MODEL_FILE
        if not meta_path.is_file():
            raise ValueError(f"{meta_path} is missing: the checkpoint cannot be verified. Restore it, or {START_AFRESH}")
        meta = _read_json(meta_path, "a checkpoint's metadata")
        problem = _meta_problem(meta, folder)
        if problem:
            raise ValueError(_damaged(meta_path, problem))
        if not model_file.is_file():
            raise ValueError(f"{model_file} is missing from the checkpoint. Restore it, or {START_AFRESH}")
        if _sha256(model_file.read_bytes()) != meta["files"][MODEL_FILE]:
            raise ValueError(_damaged(model_file, f"its SHA-256 is not the one {meta_path.name} recorded"))
        return Checkpoint(folder, meta["epoch"], meta["history"], meta["identity"])

    def restore(self, model, checkpoint, steps_per_epoch):
        """Loads a verified checkpoint into a compiled model: weights, Adam's moments and step count. Writes
        nothing; a ValueError if the model file cannot be loaded, or holds another number of steps."""
        if not model.optimizer.built:
            # Adam's moments exist only once built; unbuilt, Keras would skip loading them.
            model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(checkpoint.model_file)
        except Exception as error:  # h5py and Keras raise many types for a damaged file
            raise ValueError(f"{checkpoint.model_file} could not be loaded ({type(error).__name__}: {error}). "
                             f"Choose another output folder, or {START_AFRESH}") from None
        steps = int(ops.convert_to_numpy(model.optimizer.iterations))
        if steps != checkpoint.epoch * steps_per_epoch:
            raise ValueError(f"{checkpoint.model_file} holds an optimizer after {steps} steps, not the "
                             f"{checkpoint.epoch * steps_per_epoch} of its {checkpoint.epoch} epochs; it does not "
                             f"belong to this run. Choose another output folder, or {START_AFRESH}")

    def start(self, identity, checkpoint):
        """After every check passed: writes config.json, and rebuilds from the checkpoint what a kill may have left behind.

        A file already as it should be is left alone, so a finished run that is only loaded again is not rewritten."""
        self._remove_partials()
        contents = {CONFIG_FILE: (json.dumps(identity["config"], indent=2) + "\n").encode()}
        if checkpoint is not None:
            contents[HISTORY_FILE] = _history_bytes(checkpoint.history)
        for name, data in contents.items():
            if not ((self / name).is_file() and (self / name).read_bytes() == data):
                write_bytes(self / name, data)
        if checkpoint is not None:
            model = self / MODEL_FILE
            if not (model.is_file() and os.path.samefile(model, checkpoint.model_file)):
                link_or_copy(checkpoint.model_file, model)

    def write_epoch(self, model, epoch, rows, identity):
        """Writes epoch `epoch`'s checkpoint whole, then the run's `vae.keras` and `history.csv`, then drops older checkpoints.

        The model is serialized once, in memory (so a full disk never reaches h5py); its bytes go to
        `checkpoint/.partial-.../`, flushed, which is renamed into place in one step; meta.json records their
        SHA-256, the run's identity and a digest of itself."""
        data = model_bytes(model)
        root = self / CHECKPOINT_DIR
        root.mkdir(exist_ok=True)
        final = root / f"epoch-{epoch:04d}"
        partial = root / f".partial-{epoch:04d}-{os.getpid()}-{secrets.token_hex(4)}"
        meta = {"format": CHECKPOINT_FORMAT, "epoch": epoch, "history": rows, "identity": identity,
                "files": {MODEL_FILE: _sha256(data)}}
        meta["digest"] = _digest(meta)
        try:
            partial.mkdir()
            for name, content in ((MODEL_FILE, data), (CHECKPOINT_META, json.dumps(meta, indent=1).encode())):
                checked_write(final / name, lambda: (partial / name).write_bytes(content))
                fsync(partial / name)
            fsync(partial)
            shutil.rmtree(final, ignore_errors=True)  # only a rerun of the same epoch has one
            os.rename(partial, final)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        fsync(root)
        link_or_copy(final / MODEL_FILE, self / MODEL_FILE)
        write_history(self / HISTORY_FILE, rows)
        for old in root.iterdir():
            if old != final:
                shutil.rmtree(old, ignore_errors=True)

    def _remove_partials(self):
        """Deletes the half-written checkpoints of killed writers (the lock is held: no writer is alive)."""
        root = self / CHECKPOINT_DIR
        for partial in root.glob(".partial-*") if root.is_dir() else []:
            shutil.rmtree(partial, ignore_errors=True)


def model_bytes(model):
    """The `.keras` file of `model` (with its optimizer's state) as bytes, written in memory.

    Keras 3.15 caches the attribute names its save skips under one key and looks them up under another, so every
    save builds throwaway reference objects, an optimizer among them, whose native memory is never returned (72 KB a
    save: 1.6 GB after 4,000 epochs). Filling the key it reads first makes a save keep none
    (benchmarks/checkpoint_memory.py)."""
    for kind in ("Layer", "Functional", "Sequential", "Metric", "Optimizer", "Operation", "Loss"):
        key = f"saving_attr_skiplist_{kind}"
        if global_state.get_global_attribute(key) is None:
            global_state.set_global_attribute(key, saving_lib.get_attr_skipset(kind))
    buffer = io.BytesIO()
    saving_lib.save_model(model, buffer)  # `model.save` itself takes only file names
    return buffer.getvalue()


class EpochWriter(keras.callbacks.Callback):
    """Writes each finished epoch of a training run into its `RunFolder` (`write_epoch`), once.

    `rows` are the history rows of the epochs already finished (a resumed run's); `stopped()` is true when
    the epoch must not be kept (a NaN loss)."""

    def __init__(self, folder, identity, rows=(), stopped=lambda: False):
        super().__init__()
        self.folder, self.identity, self.rows, self.stopped = folder, identity, list(rows), stopped

    def on_epoch_end(self, epoch, logs=None):
        if self.stopped():
            return
        self.rows.append({"epoch": epoch, **{name: float(value) for name, value in sorted((logs or {}).items())}})
        self.folder.write_epoch(self.model, epoch + 1, self.rows, self.identity)


def read_history(path):
    """Reads a run's `history.csv` into a dict of columns (lists of floats), `epoch` counted from 1.
    A FileNotFoundError for a missing file, a ValueError naming the line for one that is not a training history."""
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
                columns[name].append(int(value) + 1 if name == "epoch" else float(value) if value != "" else float("nan"))
            except ValueError:
                raise ValueError(f"{path}, line {line}: {name}={value!r} is not a number") from None
    return columns


def write_history(path, rows):
    """Writes the per-epoch rows as `history.csv` (as Keras' CSVLogger lays it out), atomically."""
    write_bytes(path, _history_bytes(rows))


def _history_bytes(rows):
    columns = ["epoch", *sorted({name for row in rows for name in row} - {"epoch"})]
    lines = [",".join(columns), *(",".join(str(row.get(name, "")) for name in columns) for row in rows)]
    return ("\n".join(lines) + "\n").encode()


def history_beside(model_path):
    """The history of a model file, if it exists: the pretrained model's (`model_path` None) or `RUN/history.csv` beside `RUN/vae.keras`; else None."""
    path = PRETRAINED_HISTORY_PATH if model_path is None else Path(model_path).with_name(HISTORY_FILE)
    return path if path.is_file() else None


def config_beside(model_path):
    """The `VAEConfig` of the run whose `vae.keras` is `model_path`, from its `config.json`; None without one."""
    path = None if model_path is None else Path(model_path).with_name(CONFIG_FILE)
    if path is None or not path.is_file():
        return None
    saved = _read_json(path, "a run's configuration")
    try:
        return VAEConfig(**saved)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path} is not a run's configuration ({error})") from None


def _differences(saved, identity):
    """What differs between a checkpoint's identity and a new run's, but `epochs`: "backend" and config fields."""
    defaults = json.loads(json.dumps(dataclasses.asdict(VAEConfig())))
    saved_config = saved.get("config", {})
    # A field the saved run predates counts as holding its default.
    differing = [f"{name} (the run: {saved_config.get(name, defaults[name])!r}, now: {value!r})"
                 for name, value in identity["config"].items()
                 if name != "epochs" and saved_config.get(name, defaults.get(name)) != value]
    if saved.get("data") is not None and identity.get("data") is not None and saved["data"] != identity["data"]:
        differing.insert(0, "the images (their SHA-256 differs: other images, or another train_size or test_size)")
    if saved.get("backend") != identity["backend"]:
        differing.insert(0, f"backend (the run: {saved.get('backend')!r}, now: {identity['backend']!r})")
    return differing


def _read_json(path, what):
    """The JSON object in `path`; a one-line ValueError naming the file for anything else."""
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as error:  # RecursionError: absurdly nested JSON
        problem = f"not readable JSON: {type(error).__name__}: {str(error)[:200]}"
    else:
        if isinstance(content, dict):
            return content
        problem = f"a JSON {type(content).__name__}"
    raise ValueError(f"{path} is not {what} ({problem}); nothing was loaded or overwritten. Restore it, choose "
                     f"another output folder, or {START_AFRESH}")


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _digest(meta):
    """The SHA-256 of a meta dict without its "digest", as canonical JSON."""
    return _sha256(json.dumps({key: value for key, value in meta.items() if key != "digest"}, sort_keys=True).encode())


def _meta_problem(meta, folder):
    """What is wrong with a checkpoint's meta dict, or None."""
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
    epochs = identity.get("config", {}).get("epochs") if isinstance(identity.get("config"), dict) else None
    if not isinstance(epochs, int) or epoch > epochs:
        return f"it records epoch {epoch} of a run of {epochs!r} epochs"
    if not isinstance(meta.get("files"), dict) or MODEL_FILE not in meta["files"]:
        return f"no digest of {MODEL_FILE}"
    return None


def _damaged(path, problem):
    return (f"{path} is not a valid checkpoint ({problem}); nothing was loaded or overwritten. Restore the folder, "
            f"choose another output folder, or {START_AFRESH}")
