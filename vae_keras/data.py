"""MNIST from its four IDX files (reading, checking and scaling, with clear errors), and its training batches."""

import gzip
import hashlib
import math
import zlib
from pathlib import Path

import keras
import numpy as np

from vae_keras.checks import check_int
from vae_keras.config import DEFAULT_DATA_DIR

# The four files of MNIST, by role, without the `.gz` suffix.
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# SHA-256 of each file's *uncompressed* content, as in the original
# distribution (the gzip wrapper around it may differ from copy to copy).
MNIST_SHA256 = {
    "train-images-idx3-ubyte": (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    ),
    "train-labels-idx1-ubyte": (
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
    ),
    "t10k-images-idx3-ubyte": (
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
    ),
    "t10k-labels-idx1-ubyte": (
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
    ),
}

# The size of each file's uncompressed content: the most a file of that kind is read to.
MNIST_BYTES = {
    "train-images-idx3-ubyte": 16 + 60_000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60_000,
    "t10k-images-idx3-ubyte": 16 + 10_000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10_000,
}

# IDX element type codes (byte 2 of the header) and their big-endian dtypes.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"

# The most bytes `read_idx` inflates or reads by default: 128 MiB, nearly three
# times MNIST's largest file (47 MB), so a header that claims more is refused
# before anything is allocated.
MAX_IDX_BYTES = 1 << 27

_IMAGE_SIZE = (28, 28)
_NUM_CLASSES = 10


class DataError(ValueError):
    """A data file is missing, corrupt or not what was expected.

    The message names the file and says what is wrong with it.

    Args:
        message: the full message, starting with the file's path.
        path: the file (or folder) at fault, kept as the `path` attribute.
    """

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path


class MissingDataError(DataError, FileNotFoundError):
    """A data file (or all of them) is not where it should be.

    Both a `DataError` and a `FileNotFoundError`, so either can catch it.
    """


# The most dimensions read from an IDX header (NumPy arrays have at most 64;
# MNIST's files have 1 or 3).
_MAX_IDX_DIMS = 32


def _fail(path, problem, error_class=DataError):
    """Builds the error for `path`: the path first, then what is wrong."""
    return error_class(f"{path}: {problem}", path=path)


def _read_file_bytes(path, max_bytes=MAX_IDX_BYTES):
    """Returns the bytes of `path`, decompressed when it is gzip (by magic); never more than `max_bytes`."""
    if not path.exists():
        raise _fail(
            path,
            "no such file. Check the path, or put the file there.",
            MissingDataError,
        )
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
            raise _fail(
                path,
                f"the name ends in .gz but the file is not gzip-compressed "
                f"(first bytes {content[:2].hex(' ')}, expected 1f 8b); "
                f"rename it without .gz if it is a raw IDX file, or replace it.",
            )
        return content

    try:
        content = _bounded_gunzip(content, max_bytes)
    except EOFError as error:
        raise _fail(
            path,
            "the gzip stream is truncated (it ends before its end marker); "
            "the file is incomplete, download or copy it again.",
        ) from error
    except (gzip.BadGzipFile, zlib.error) as error:
        raise _fail(
            path, f"the gzip data is corrupt ({error}); replace the file."
        ) from error
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
                raise _TooLarge(f"decompresses to more than the {limit:,} bytes its IDX header declares (trailing bytes follow them)")
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
    """Returns the array that the IDX bytes `content` hold."""
    if len(content) < 4:
        raise _fail(
            path,
            f"truncated: {len(content)} bytes, too short for the 4-byte IDX "
            f"header.",
        )
    if content[:2] != b"\x00\x00":
        raise _fail(
            path,
            f"wrong magic number: the first two bytes are "
            f"{content[:2].hex(' ')}, an IDX file starts with 00 00. "
            f"Is it an IDX file?",
        )
    type_code, ndim = content[2], content[3]
    if type_code not in IDX_DTYPES:
        supported = ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
        raise _fail(
            path,
            f"unsupported IDX element type 0x{type_code:02X} "
            f"(supported: {supported}).",
        )
    if ndim > _MAX_IDX_DIMS:
        raise _fail(
            path,
            f"the header declares {ndim} dimensions; an IDX file of images or "
            f"labels has 1 to 3 (at most {_MAX_IDX_DIMS} are read). Is it an IDX file?",
        )
    dtype = IDX_DTYPES[type_code]
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise _fail(
            path,
            f"truncated: the header declares {ndim} dimensions "
            f"({header_size} header bytes) but the file holds only "
            f"{len(content)} bytes.",
        )
    shape = tuple(
        int(size) for size in np.frombuffer(content, ">u4", ndim, offset=4)
    )
    expected_size = math.prod(shape) * dtype.itemsize
    actual_size = len(content) - header_size
    if actual_size < expected_size:
        raise _fail(
            path,
            f"truncated: the header declares shape {shape} of {dtype.name}, "
            f"{expected_size} bytes of data, but only {actual_size} bytes "
            f"follow the header.",
        )
    if actual_size > expected_size:
        raise _fail(
            path,
            f"size mismatch: the header declares shape {shape} of "
            f"{dtype.name}, {expected_size} bytes of data, but "
            f"{actual_size - expected_size} trailing bytes follow them.",
        )
    array = np.frombuffer(
        content, dtype, math.prod(shape), offset=header_size
    ).reshape(shape)
    if dtype.itemsize > 1:
        # Big-endian to native byte order (a copy, so writable).
        return array.astype(dtype.newbyteorder("="))
    # A view of the bytes is read-only; copy unless the caller only reads it.
    return array.copy() if copy else array


def read_idx(path, max_bytes=MAX_IDX_BYTES):
    """Reads one IDX file, gzip-compressed (recognised by its magic bytes) or raw, into a NumPy array.

    Args:
        path: the file.
        max_bytes: the most bytes of IDX content to read; a header declaring more is refused before reading on.

    Returns:
        A writable array of the shape and element type its header declares, native byte order.

    Raises:
        MissingDataError: the file does not exist.
        DataError: the file is empty, truncated, corrupt, not gzip though named `.gz`, not
            IDX, or its header disagrees with its length.
    """
    path = Path(path)
    return _parse_idx(_read_file_bytes(path, max_bytes), path)


def _find_mnist_files(data_dir):
    """Returns {role: path} for the MNIST files found, and the names missing."""
    found, missing = {}, []
    for role, name in MNIST_FILES.items():
        for candidate in (data_dir / f"{name}.gz", data_dir / name):
            if candidate.exists():
                found[role] = candidate
                break
        else:
            missing.append(f"{name}.gz")
    return found, missing


def _read_mnist_file(path, name, verify):
    """Reads one MNIST file (at most as large as MNIST's own) and, if `verify`, checks its SHA-256."""
    content = _read_file_bytes(path, MNIST_BYTES[name])
    array = _parse_idx(content, path, copy=False)
    if verify:
        actual = hashlib.sha256(content).hexdigest()
        expected = MNIST_SHA256[name]
        if actual != expected:
            raise _fail(
                path,
                f"checksum mismatch: the SHA-256 of its uncompressed content "
                f"is {actual}, expected {expected} (the original MNIST "
                f"{name}). The file is corrupt or not the original; replace "
                f"it, or pass verify=False to load other data in this format.",
            )
    return array


def _check_images(images, path):
    if images.ndim != 3 or images.shape[1:] != _IMAGE_SIZE:
        raise _fail(
            path,
            f"wrong shape for MNIST images: {images.shape}, expected "
            f"(N, 28, 28) (3 dimensions).",
        )
    if images.dtype != np.uint8:
        raise _fail(
            path,
            f"wrong element type for MNIST images: {images.dtype}, expected "
            f"uint8.",
        )


def _check_labels(labels, path):
    if labels.ndim != 1:
        raise _fail(
            path,
            f"wrong shape for MNIST labels: {labels.shape}, expected (N,) "
            f"(1 dimension).",
        )
    if labels.dtype != np.uint8:
        raise _fail(
            path,
            f"wrong element type for MNIST labels: {labels.dtype}, expected "
            f"uint8.",
        )
    if labels.size and labels.max() >= _NUM_CLASSES:
        bad = int(np.argmax(labels >= _NUM_CLASSES))
        raise _fail(
            path,
            f"label out of range: label {int(labels[bad])} at index {bad}, "
            f"MNIST labels are 0-9.",
        )


def _check_pair(images, labels, images_path, labels_path):
    """Validates one (images, labels) split; each error names its file."""
    _check_images(images, images_path)
    _check_labels(labels, labels_path)
    if len(images) != len(labels):
        raise _fail(
            images_path,
            f"count mismatch: {len(images)} images but {len(labels)} labels "
            f"in {labels_path}.",
        )


def _scale(images):
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1]; float32 division is correctly rounded, and fastest."""
    return np.divide(
        images.reshape(*images.shape, 1), np.float32(255), dtype=np.float32
    )


def load_mnist(data_dir=None, verify=True):
    """Loads MNIST from its four IDX files (gzip-compressed or not), scaled to [0, 1]; nothing is downloaded.

    Args:
        data_dir: the folder with the four files; None: the project's `data/`.
        verify: check each file's SHA-256 against the original MNIST's (off for other data).

    Returns:
        `(x_train, y_train), (x_test, y_test)`: float32 images (N, 28, 28, 1) in
        [0, 1] and uint8 labels (N,); N = 60,000 and 10,000.

    Raises:
        MissingDataError: the folder or some (or all) of the files are missing; it names them.
        DataError: a file is corrupt, truncated, fails its checksum, or holds the wrong arrays.
    """
    data_dir = DEFAULT_DATA_DIR if data_dir is None else Path(data_dir)
    if not data_dir.is_dir():
        raise _fail(
            data_dir,
            "no such folder; pass data_dir= the folder that holds the four MNIST files "
            "(by default the project's data/ folder, which ships them).",
            MissingDataError,
        )
    found, missing = _find_mnist_files(data_dir)
    if missing:
        raise _fail(
            data_dir,
            f"missing MNIST file(s): {', '.join(missing)} (or the same name without .gz); "
            f"found {', '.join(path.name for path in found.values()) or 'none of them'}. "
            f"Put the missing file(s) in this folder.",
            MissingDataError,
        )
    arrays = {role: _read_mnist_file(path, MNIST_FILES[role], verify) for role, path in found.items()}
    for split in ("train", "test"):
        images, labels = f"{split}_images", f"{split}_labels"
        _check_pair(arrays[images], arrays[labels], found[images], found[labels])
    return (
        (_scale(arrays["train_images"]), arrays["train_labels"].copy()),
        (_scale(arrays["test_images"]), arrays["test_labels"].copy()),
    )


class EpochBatches(keras.utils.PyDataset):
    """The training images as NumPy mini-batches for every backend: floor(N / batch_size) full batches per epoch.

    One sequence over all the run's epochs: batch `i` belongs to epoch
    `first_epoch + i // steps`, whatever Keras prefetches. With `shuffle`, an
    epoch's order depends on the seed and the epoch alone, so a resumed run
    sees the same batches as an uninterrupted one.

    Args:
        x: images (N, 28, 28, 1); batch_size: images per batch; epochs: the run's epochs;
        shuffle: reshuffle before each epoch; seed: seed of the permutations;
        first_epoch: the epoch batch 0 belongs to (0-based; a resumed run's finished epochs);
        labels: the images' labels (N,) for a conditional model: batches are then
            `((images, labels),)`; None: `(images,)`.

    Attributes:
        steps: batches per epoch.
    """

    def __init__(self, x, batch_size, epochs, shuffle=False, seed=0, labels=None, first_epoch=0):
        super().__init__()
        if batch_size > len(x):
            raise ValueError(f"batch_size must be at most the {len(x)} training images, received batch_size={batch_size}")
        if labels is not None and len(labels) != len(x):
            raise ValueError(f"labels must have one label per image, received {len(labels)} for {len(x)} images")
        self.x = x
        self.labels = None if labels is None else np.asarray(labels).astype("int32")
        self.batch_size = batch_size
        self.epochs = epochs
        self.shuffle = shuffle
        self.seed = seed
        self.steps = len(x) // batch_size
        self.first_epoch = first_epoch
        self._orders = {}

    def __len__(self):
        return self.steps * self.epochs

    def __getitem__(self, index):
        epoch, step = divmod(index, self.steps)
        start = step * self.batch_size
        rows = slice(start, start + self.batch_size)
        if self.shuffle:
            rows = self.order(self.first_epoch + epoch)[rows]
        if self.labels is None:
            return (self.x[rows],)
        return ((self.x[rows], self.labels[rows]),)

    def order(self, epoch):
        """The permutation of the training images in epoch `epoch` (0-based)."""
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.x))}
        return self._orders[epoch]


def in_batches(function, x, batch_size):
    """Calls `function` on consecutive slices of `x`, `batch_size` rows each, and joins its outputs as NumPy arrays.

    Bounds the memory of a model's activations over a whole data set:
    `in_batches(model.decode, codes, 1_000)`. Where `x` is a tuple of arrays of
    one length, each call gets a slice of each: `in_batches(model.encode, (images, labels), 1_000)`.
    A `function` that returns a tuple gives a tuple of arrays.
    """
    check_int("batch_size", batch_size)
    parts = x if isinstance(x, tuple) else (x,)
    if len({len(part) for part in parts}) != 1:
        raise ValueError(f"in_batches needs arrays of one length, received lengths {[len(part) for part in parts]}")
    if len(parts[0]) == 0:
        raise ValueError("in_batches needs at least one row, received an empty array")
    outputs = [
        function(*(part[start : start + batch_size] for part in parts)) for start in range(0, len(parts[0]), batch_size)
    ]
    if isinstance(outputs[0], tuple):
        return tuple(np.concatenate([keras.ops.convert_to_numpy(part) for part in parts]) for parts in zip(*outputs))
    return np.concatenate([keras.ops.convert_to_numpy(output) for output in outputs])
