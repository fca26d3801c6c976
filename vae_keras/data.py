"""MNIST from its four IDX files (reading, checking and scaling, with clear errors), and its training batches."""

import gzip
import hashlib
import math
import zlib
from pathlib import Path

import keras
import numpy as np

from vae_keras.config import DEFAULT_DATA_DIR, check_int

# The four files of MNIST, by role, without the `.gz` suffix.
MNIST_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
               "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}

# SHA-256 of each file's *uncompressed* content, as in the original distribution (its gzip wrapper may differ).
MNIST_SHA256 = {"train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"}

# The size of each file's uncompressed content: the most a file of that kind is read to.
MNIST_BYTES = {"train-images-idx3-ubyte": 16 + 60_000 * 28 * 28, "train-labels-idx1-ubyte": 8 + 60_000,
               "t10k-images-idx3-ubyte": 16 + 10_000 * 28 * 28, "t10k-labels-idx1-ubyte": 8 + 10_000}

# IDX element type codes (byte 2 of the header) and their big-endian dtypes.
IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

_GZIP_MAGIC = b"\x1f\x8b"

# The most bytes `read_idx` inflates or reads by default: 128 MiB, nearly three times MNIST's largest file
# (47 MB), so a header that claims more is refused before anything is allocated.
MAX_IDX_BYTES = 1 << 27

# The most dimensions read from an IDX header (NumPy arrays have at most 64; MNIST's files have 1 or 3).
_MAX_IDX_DIMS = 32


class DataError(ValueError):
    """A data file is missing, corrupt or not what was expected: the message starts with the file's path and says
    what is wrong with it; the `path` attribute holds the file (or folder)."""

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path


class MissingDataError(DataError, FileNotFoundError):
    """A data file (or all of them) is not where it should be; both a `DataError` and a `FileNotFoundError`."""


def _fail(path, problem, error_class=DataError):
    """Builds the error for `path`: the path first, then what is wrong."""
    return error_class(f"{path}: {problem}", path=path)


def _read_file_bytes(path, max_bytes=MAX_IDX_BYTES):
    """Returns the bytes of `path`, decompressed when it is gzip (by magic); never more than `max_bytes`."""
    if not path.exists():
        raise _fail(path, "no such file. Check the path, or put the file there.", MissingDataError)
    if not path.is_file():
        raise _fail(path, "not a regular file (a folder?), cannot read it.")
    size = path.stat().st_size
    if size > max_bytes + 4096:  # a gzip stream of max_bytes of IDX is no larger
        raise _fail(path, f"{size:,} bytes, more than the {max_bytes:,} an IDX file read here may hold; not read.")
    try:
        content = path.read_bytes()
    except OSError as error:
        raise _fail(path, f"could not be read: {error}.") from error
    if not content:
        raise _fail(path, "the file is empty (0 bytes); replace it.")

    if content[:2] != _GZIP_MAGIC:  # raw: its size on disk, checked above, bounds what was read
        if path.suffix == ".gz" and _GZIP_MAGIC.startswith(content):
            raise _fail(path, "the gzip stream is truncated (1 byte long).")
        if path.suffix == ".gz":
            raise _fail(path, f"the name ends in .gz but the file is not gzip-compressed (first bytes "
                              f"{content[:2].hex(' ')}, expected 1f 8b); rename it without .gz if it is a raw IDX "
                              "file, or replace it.")
        return content

    try:
        content = _bounded_gunzip(content, max_bytes)
    except EOFError as error:
        raise _fail(path, "the gzip stream is truncated (it ends before its end marker); the file is incomplete, "
                          "download or copy it again.") from error
    except (gzip.BadGzipFile, zlib.error) as error:
        raise _fail(path, f"the gzip data is corrupt ({error}); replace the file.") from error
    except _TooLarge as error:
        raise _fail(path, f"{error.args[0]}; stopped reading (corrupt, or not an IDX file of this kind).") from None
    if not content:
        raise _fail(path, "the file is empty once decompressed; replace it.")
    return content


class _TooLarge(Exception):
    """The gzip stream inflates past the size its IDX header declares."""


def _bounded_gunzip(compressed, max_bytes, chunk=1 << 20):
    """Decompresses gzip bytes; stops at the first byte past the size the IDX header declares, and refuses a
    header that declares more than `max_bytes`, before inflating more than its first chunk (no zip bombs)."""
    parts, size, limit = [], 0, None
    data = compressed
    while data:
        if data[:2] != _GZIP_MAGIC:
            raise gzip.BadGzipFile(f"{len(data)} bytes of trailing garbage after the gzip stream")
        inflater = zlib.decompressobj(wbits=31)  # 31: one gzip member
        while not inflater.eof:
            budget = chunk if limit is None else max(1, min(chunk, limit + 1 - size))
            try:
                part = inflater.decompress(data, budget)
            except zlib.error as error:
                if "incorrect data check" in str(error):
                    raise gzip.BadGzipFile("CRC check failed") from None
                raise
            data = inflater.unconsumed_tail
            parts.append(part)
            size += len(part)
            if limit is None:
                limit = _declared_size(b"".join(parts))
                if limit == 0:
                    return b"".join(parts)
                if limit is not None and limit > max_bytes:
                    raise _TooLarge(f"its IDX header declares {limit:,} bytes, more than the {max_bytes:,} "
                                    "a file of this kind may hold")
            if limit is not None and size > limit:
                raise _TooLarge(f"decompresses to more than the {limit:,} bytes its IDX header declares "
                                "(trailing bytes follow them)")
            if not part and not data and not inflater.eof:
                raise EOFError("the gzip stream ends before its end marker")
        data = inflater.unused_data  # a further gzip member, or garbage
    return b"".join(parts)


def _declared_size(head):
    """The total size an IDX header declares, or None while `head` is too short to tell."""
    if len(head) < 4 or len(head) < 4 + 4 * head[3]:
        return None
    ndim = head[3]
    if ndim > _MAX_IDX_DIMS or head[2] not in IDX_DTYPES:
        return 0  # _parse_idx rejects the header: read no further
    dims = np.frombuffer(head, ">u4", ndim, offset=4)
    return 4 + 4 * ndim + math.prod(int(d) for d in dims) * IDX_DTYPES[head[2]].itemsize


def _parse_idx(content, path, copy=True):
    """Returns the array that the IDX bytes `content` hold; `copy=False` may return a read-only view of them."""
    if len(content) < 4:
        raise _fail(path, f"truncated: {len(content)} bytes, too short for the 4-byte IDX header.")
    if content[:2] != b"\x00\x00":
        raise _fail(path, f"wrong magic number: the first two bytes are {content[:2].hex(' ')}, an IDX file starts "
                          "with 00 00. Is it an IDX file?")
    type_code, ndim = content[2], content[3]
    if type_code not in IDX_DTYPES:
        supported = ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
        raise _fail(path, f"unsupported IDX element type 0x{type_code:02X} (supported: {supported}).")
    if ndim > _MAX_IDX_DIMS:
        raise _fail(path, f"the header declares {ndim} dimensions; an IDX file of images or labels has 1 to 3 "
                          f"(at most {_MAX_IDX_DIMS} are read). Is it an IDX file?")
    dtype = IDX_DTYPES[type_code]
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise _fail(path, f"truncated: the header declares {ndim} dimensions ({header_size} header bytes) but the "
                          f"file holds only {len(content)} bytes.")
    shape = tuple(int(size) for size in np.frombuffer(content, ">u4", ndim, offset=4))
    expected_size, actual_size = math.prod(shape) * dtype.itemsize, len(content) - header_size
    declared = f"the header declares shape {shape} of {dtype.name}, {expected_size} bytes of data, but"
    if actual_size < expected_size:
        raise _fail(path, f"truncated: {declared} only {actual_size} bytes follow the header.")
    if actual_size > expected_size:
        raise _fail(path, f"size mismatch: {declared} {actual_size - expected_size} trailing bytes follow them.")
    array = np.frombuffer(content, dtype, math.prod(shape), offset=header_size).reshape(shape)
    if dtype.itemsize > 1:
        return array.astype(dtype.newbyteorder("="))  # big-endian to native byte order (a copy, so writable)
    return array.copy() if copy else array  # a view of the bytes is read-only; copy unless the caller only reads it


def read_idx(path, max_bytes=MAX_IDX_BYTES):
    """Reads one IDX file, gzip-compressed (recognised by its magic bytes) or raw, into a writable NumPy array.

    The array has the shape and element type its header declares, in native byte order. A header that declares
    more than `max_bytes` of content is refused before reading on.

    Raises:
        MissingDataError: the file does not exist.
        DataError: the file is empty, truncated, corrupt, not gzip though named `.gz`, not
            IDX, or its header disagrees with its length.
    """
    path = Path(path)
    return _parse_idx(_read_file_bytes(path, max_bytes), path)


def _check_split(images, labels, images_path, labels_path):
    """Validates one (images, labels) split of MNIST; each error names its file."""
    for array, path, kind, shape, expected in ((images, images_path, "images", (28, 28), "(N, 28, 28) (3 dimensions)"),
                                               (labels, labels_path, "labels", (), "(N,) (1 dimension)")):
        if array.ndim != 1 + len(shape) or array.shape[1:] != shape:
            raise _fail(path, f"wrong shape for MNIST {kind}: {array.shape}, expected {expected}.")
        if array.dtype != np.uint8:
            raise _fail(path, f"wrong element type for MNIST {kind}: {array.dtype}, expected uint8.")
    if labels.size and labels.max() >= 10:
        bad = int(np.argmax(labels >= 10))
        raise _fail(labels_path, f"label out of range: label {int(labels[bad])} at index {bad}, MNIST labels are 0-9.")
    if len(images) != len(labels):
        raise _fail(images_path, f"count mismatch: {len(images)} images but {len(labels)} labels in {labels_path}.")


def load_mnist(data_dir=None, verify=True):
    """Loads MNIST from its four IDX files (gzip-compressed or not), scaled to [0, 1]; nothing is downloaded.

    `data_dir` is the folder with the four files (None: the project's `data/`); `verify` checks each file's
    SHA-256 against the original MNIST's (turn it off for other data in this format).

    Returns:
        `(x_train, y_train), (x_test, y_test)`: float32 images (N, 28, 28, 1) in [0, 1] and uint8 labels (N,);
        N = 60,000 and 10,000.

    Raises:
        MissingDataError: the folder or some (or all) of the files are missing; it names them.
        DataError: a file is corrupt, truncated, fails its checksum, or holds the wrong arrays.
    """
    data_dir = DEFAULT_DATA_DIR if data_dir is None else Path(data_dir)
    if not data_dir.is_dir():
        raise _fail(data_dir, "no such folder; pass data_dir= the folder that holds the four MNIST files "
                              "(by default the project's data/ folder, which ships them).", MissingDataError)
    found, missing = {}, []
    for role, name in MNIST_FILES.items():
        candidates = [path for path in (data_dir / f"{name}.gz", data_dir / name) if path.exists()]
        if candidates:
            found[role] = candidates[0]
        else:
            missing.append(f"{name}.gz")
    if missing:
        raise _fail(data_dir, f"missing MNIST file(s): {', '.join(missing)} (or the same name without .gz); found "
                              f"{', '.join(path.name for path in found.values()) or 'none of them'}. "
                              "Put the missing file(s) in this folder.", MissingDataError)
    arrays = {}
    for role, path in found.items():
        name = MNIST_FILES[role]
        content = _read_file_bytes(path, MNIST_BYTES[name])  # at most as large as MNIST's own file
        arrays[role] = _parse_idx(content, path, copy=False)
        if verify:
            actual = hashlib.sha256(content).hexdigest()
            if actual != MNIST_SHA256[name]:
                raise _fail(path, f"checksum mismatch: the SHA-256 of its uncompressed content is {actual}, expected "
                                  f"{MNIST_SHA256[name]} (the original MNIST {name}). The file is corrupt or not the "
                                  "original; replace it, or pass verify=False to load other data in this format.")
    splits = []
    for split in ("train", "test"):
        images, labels = f"{split}_images", f"{split}_labels"
        _check_split(arrays[images], arrays[labels], found[images], found[labels])
        # uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1]; float32 division is correctly rounded, and fastest.
        splits.append((np.divide(arrays[images][..., None], np.float32(255), dtype=np.float32), arrays[labels].copy()))
    return tuple(splits)


class EpochBatches(keras.utils.PyDataset):
    """The training images as NumPy mini-batches for every backend: floor(N / batch_size) full batches per epoch.

    One sequence over all the run's epochs: batch `i` belongs to epoch `first_epoch + i // steps` (`steps`: batches
    per epoch), whatever Keras prefetches. With `shuffle`, an epoch's order depends on the seed and the epoch alone,
    so a resumed run sees the same batches as an uninterrupted one. `x`: images (N, 28, 28, 1); `first_epoch`: the
    epoch batch 0 belongs to (0-based: a resumed run's finished epochs); `labels`: the images' labels (N,) for a
    conditional model: batches are then `((images, labels),)`; None: `(images,)`.
    """

    def __init__(self, x, batch_size, epochs, shuffle=False, seed=0, labels=None, first_epoch=0):
        super().__init__()
        if batch_size > len(x):
            raise ValueError(f"batch_size must be at most the {len(x)} training images, "
                             f"received batch_size={batch_size}")
        if labels is not None and len(labels) != len(x):
            raise ValueError(f"labels must have one label per image, received {len(labels)} for {len(x)} images")
        self.x = x
        self.labels = None if labels is None else np.asarray(labels).astype("int32")
        self.batch_size, self.epochs, self.shuffle, self.seed = batch_size, epochs, shuffle, seed
        self.steps = len(x) // batch_size
        self.first_epoch = first_epoch
        self._orders = {}

    def __len__(self):
        return self.steps * self.epochs

    def __getitem__(self, index):
        epoch, step = divmod(index, self.steps)
        rows = slice(step * self.batch_size, (step + 1) * self.batch_size)
        if self.shuffle:
            rows = self.order(self.first_epoch + epoch)[rows]
        return (self.x[rows],) if self.labels is None else ((self.x[rows], self.labels[rows]),)

    def order(self, epoch):
        """The permutation of the training images in epoch `epoch` (0-based)."""
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.x))}
        return self._orders[epoch]


def in_batches(function, x, batch_size):
    """Calls `function` on consecutive slices of `x`, `batch_size` rows each, and joins its outputs as NumPy arrays.

    Bounds the memory of a model's activations over a whole data set: `in_batches(model.decode, codes, 1_000)`.
    Where `x` is a tuple of arrays of one length, each call gets a slice of each:
    `in_batches(model.encode, (images, labels), 1_000)`. A `function` that returns a tuple gives a tuple of arrays.
    """
    check_int("batch_size", batch_size)
    parts = x if isinstance(x, tuple) else (x,)
    if len({len(part) for part in parts}) != 1:
        raise ValueError(f"in_batches needs arrays of one length, received lengths {[len(part) for part in parts]}")
    if len(parts[0]) == 0:
        raise ValueError("in_batches needs at least one row, received an empty array")
    outputs = [function(*(part[start : start + batch_size] for part in parts))
               for start in range(0, len(parts[0]), batch_size)]
    if isinstance(outputs[0], tuple):
        return tuple(np.concatenate([keras.ops.convert_to_numpy(part) for part in parts]) for parts in zip(*outputs))
    return np.concatenate([keras.ops.convert_to_numpy(output) for output in outputs])
