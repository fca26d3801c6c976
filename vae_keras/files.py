"""Files written whole or not at all, and `.keras` files read with errors that name them."""

import contextlib
import errno
import glob
import os
import secrets
import shutil
import zipfile
from pathlib import Path


def write_atomically(path, write):
    """Writes a file whole or not at all; a full disk is one `OSError` naming the file. Returns `path`.

    `write(temporary)` writes to this writer's own temporary file (`temporary_beside`), flushed to disk and renamed
    onto `path` in one step: a kill at any moment leaves the old file or the new one; two writers never mix bytes.
    """
    path = Path(path)
    temporary = temporary_beside(path)
    try:
        checked_write(path, lambda: write(temporary))
        fsync(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync(path.parent)
    return path


def write_bytes(path, data):
    """`write_atomically` of the bytes `data`."""
    return write_atomically(path, lambda temporary: Path(temporary).write_bytes(data))


def checked_write(path, write):
    """Runs `write()`; a full disk or another write error becomes one `OSError` that names `path`."""
    try:
        write()
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"No space left on device while writing {path}; free some space "
                          "and run the same command again") from None
        raise OSError(error.errno, f"Could not write {path}: {error.strerror or error}") from None


def fsync(path):
    """Flushes a file's or a folder's entry to disk (no-op where a folder cannot be opened)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def is_alive(pid):
    """Whether a process with this pid runs (on this machine)."""
    try:
        os.kill(pid, 0)
    except OSError as error:  # alive unless there is no such process (another user's, or no such call here)
        return not isinstance(error, ProcessLookupError)
    return True


def temporary_beside(path):
    """A temporary name beside `path` for this writer alone, `.NAME.PID-TAG.partial.SUFFIX` (the same suffix, so that
    Keras, Pillow and Matplotlib know the format). Those of `path` left by killed writers are deleted first."""
    for old in path.parent.glob(f".{glob.escape(path.stem)}.*.partial{glob.escape(path.suffix)}"):
        pid = old.name[len(path.stem) + 2 :].split("-")[0]
        if pid.isdigit() and not is_alive(int(pid)):
            old.unlink(missing_ok=True)
    return path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.partial{path.suffix}")


def link_or_copy(source, target):
    """Makes `target` the file `source`: a hard link (a copy where links fail), replaced in one step."""
    temporary = temporary_beside(target)
    try:
        try:
            os.link(source, temporary)
        except OSError:
            checked_write(target, lambda: shutil.copyfile(source, temporary))
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    fsync(target.parent)


def load_keras_file(path, what, hint="", compile=True):
    """`keras.saving.load_model(path, compile)`, with one-line errors naming the file and `what` it holds ("model"):
    `FileNotFoundError` (with `hint` added) if there is no file, `ValueError` if it is no readable `.keras` file."""
    import keras  # here, so that writing files needs no Keras
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No {what} file at {path}." + (f" {hint}" if hint else ""))
    if not zipfile.is_zipfile(path):
        raise ValueError(f"Could not load a {what} from {path}: it is not a .keras model archive (a .keras file is a "
                         "zip archive written by model.save); it may be truncated or another kind of file.")
    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as error:  # Keras raises many types for a bad archive
        raise ValueError(f"Could not load a {what} from {path}: {type(error).__name__}: {error}") from error
