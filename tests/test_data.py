"""Tests for vae_keras.data: IDX reading and writing, MNIST loading and its errors."""

import gzip
import hashlib
import tracemalloc
import zlib

import numpy as np
import pytest

from idx_files import write_idx
from vae_keras import data

# The quick subset for the edit-test loop: `pytest -m quick` (README).
pytestmark = pytest.mark.quick

# Sanity figures of the real MNIST (see data/README.md).
TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

FILE_NAMES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


def idx_bytes(array):
    """IDX bytes of a uint8 array, built by hand (independent of write_idx)."""
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim])
    header += b"".join(size.to_bytes(4, "big") for size in array.shape)
    return header + array.tobytes()


def assert_message(error_info, path, *words):
    """The error's message names the file and says what is wrong."""
    message = str(error_info.value)
    assert str(path) in message
    # Look for the words outside the path (test folders are named after tests).
    problem = message.replace(str(path), "").lower()
    for word in words:
        assert word.lower() in problem, f"{word!r} not in {message!r}"


def make_mnist_dir(directory, suffix=".gz", num_train=12, num_test=5, **arrays):
    """Writes a small synthetic MNIST set; `arrays` replaces any of its files."""
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte": rng.integers(
            0, 256, (num_train, 28, 28), dtype=np.uint8
        ),
        "train-labels-idx1-ubyte": np.arange(num_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(
            0, 256, (num_test, 28, 28), dtype=np.uint8
        ),
        "t10k-labels-idx1-ubyte": np.arange(num_test, dtype=np.uint8)[::-1] % 10,
    }
    for name, array in arrays.items():
        files[name.replace("_", "-")] = array
    for name, array in files.items():
        write_idx(directory / f"{name}{suffix}", array)
    return files


# --- read_idx: errors ------------------------------------------------------


def test_read_idx_missing_file(tmp_path):
    path = tmp_path / "absent-idx1-ubyte.gz"
    with pytest.raises(data.MissingDataError) as error_info:
        data.read_idx(path)
    assert isinstance(error_info.value, FileNotFoundError)
    assert isinstance(error_info.value, data.DataError)
    assert error_info.value.path == path
    assert_message(error_info, path, "no such file")


def test_read_idx_directory(tmp_path):
    with pytest.raises(data.DataError) as error_info:
        data.read_idx(tmp_path)
    assert_message(error_info, tmp_path, "not a regular file")


@pytest.mark.parametrize("name", ["empty-idx1-ubyte", "empty-idx1-ubyte.gz"])
def test_read_idx_empty_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(data.DataError) as error_info:
        data.read_idx(path)
    assert_message(error_info, path, "empty")


def test_read_idx_empty_after_decompression(tmp_path):
    path = tmp_path / "nothing-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(b""))
    with pytest.raises(data.DataError) as error_info:
        data.read_idx(path)
    assert_message(error_info, path, "empty")


@pytest.mark.parametrize("keep", [1, 5, 20, -4])
def test_read_idx_truncated_gzip(tmp_path, keep):
    path = tmp_path / "labels-idx1-ubyte.gz"
    content = gzip.compress(idx_bytes(np.arange(200) % 10))
    path.write_bytes(content[:keep])
    with pytest.raises(data.DataError) as error_info:
        data.read_idx(path)
    assert_message(error_info, path, "truncated")


def test_read_idx_gz_name_but_not_gzip(tmp_path):
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(idx_bytes([1, 2, 3]))
    with pytest.raises(data.DataError) as error_info:
        data.read_idx(path)
    assert_message(error_info, path, "not gzip")


def test_read_idx_gzip_crc_error(tmp_path):
    path = tmp_path / "labels-idx1-ubyte.gz"
    content = bytearray(gzip.compress(idx_bytes(np.arange(200) % 10)))
    content[-8] ^= 0xFF  # the CRC-32 in the gzip trailer
    path.write_bytes(bytes(content))
    with pytest.raises(data.DataError) as error_info:
        data.read_idx(path)
    assert_message(error_info, path, "corrupt", "crc")


@pytest.mark.parametrize("where", ["first-block-header", "middle"])
def test_read_idx_gzip_corrupt_stream(tmp_path, where):
    path = tmp_path / "images-idx3-ubyte.gz"
    images = np.random.default_rng(1).integers(0, 256, (20, 28, 28), np.uint8)
    content = bytearray(gzip.compress(idx_bytes(images)))
    if where == "middle":
        content[len(content) // 2 : len(content) // 2 + 64] = bytes(64)
    else:
        content[10] = 0xFF  # a deflate block of the reserved type 3
    path.write_bytes(bytes(content))
    with pytest.raises(data.DataError) as error_info:
        data.read_idx(path)
    assert_message(error_info, path, "corrupt")


def test_read_idx_gzip_trailing_garbage(tmp_path):
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes([1, 2])) + b"garbage!")
    with pytest.raises(data.DataError) as error_info:
        data.read_idx(path)
    assert_message(error_info, path, "corrupt")


@pytest.mark.parametrize("name", ["bad-idx1-ubyte", "bad-idx1-ubyte.gz"])
def test_read_idx_wrong_magic(tmp_path, name):
    path = tmp_path / name
    content = b"\x01\x02" + idx_bytes([1, 2, 3])[2:]
    data_bytes = gzip.compress(content) if name.endswith(".gz") else content
    path.write_bytes(data_bytes)
    with pytest.raises(data.DataError) as error_info:
        data.read_idx(path)
    assert_message(error_info, path, "magic")


def test_read_idx_text_file(tmp_path):
    path = tmp_path / "README-idx1-ubyte"
    path.write_text("not an IDX file\n")
    with pytest.raises(data.DataError) as error_info:
        data.read_idx(path)
    assert_message(error_info, path, "magic")


@pytest.mark.parametrize("type_code", [0x00, 0x0A, 0x0F, 0xFF])
def test_read_idx_unsupported_element_type(tmp_path, type_code):
    path = tmp_path / "odd-idx1-ubyte"
    path.write_bytes(bytes([0, 0, type_code, 1]) + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(data.DataError) as error_info:
        data.read_idx(path)
    assert_message(error_info, path, "unsupported", "element type")


@pytest.mark.parametrize(
    "content",
    [b"\x00\x00", b"\x00\x00\x08\x03" + bytes(6)],
    ids=["shorter-than-magic", "shorter-than-dimensions"],
)
def test_read_idx_truncated_header(tmp_path, content):
    path = tmp_path / "short-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(data.DataError) as error_info:
        data.read_idx(path)
    assert_message(error_info, path, "truncated")


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_payload_shorter_than_header_says(tmp_path, suffix):
    path = tmp_path / f"images-idx3-ubyte{suffix}"
    content = idx_bytes(np.zeros((4, 28, 28)))[:-100]
    path.write_bytes(gzip.compress(content) if suffix else content)
    with pytest.raises(data.DataError) as error_info:
        data.read_idx(path)
    assert_message(error_info, path, "truncated", "(4, 28, 28)")


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_trailing_bytes(tmp_path, suffix):
    path = tmp_path / f"labels-idx1-ubyte{suffix}"
    content = idx_bytes([1, 2, 3]) + b"\x07\x07"
    path.write_bytes(gzip.compress(content) if suffix else content)
    with pytest.raises(data.DataError) as error_info:
        data.read_idx(path)
    # A raw file's length is known; a gzip stream is inflated no further than one byte past the header's size.
    assert_message(error_info, path, "trailing", "2 trailing bytes" if not suffix else "more than the 11 bytes")


def test_read_idx_errors_chain_the_cause(tmp_path):
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes([1, 2, 3]))[:-3])
    with pytest.raises(data.DataError) as error_info:
        data.read_idx(path)
    assert isinstance(error_info.value.__cause__, EOFError)


# --- read_idx / write_idx: round trips -------------------------------------

DTYPES = ["uint8", "int8", "int16", "int32", "float32", "float64"]


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_write_read_idx_round_trip(tmp_path, dtype, suffix):
    if np.dtype(dtype).kind == "f":
        info = np.finfo(dtype)
        extremes = [info.min, info.max, info.tiny, -0.0, np.inf, 1 / 3]
    else:
        info = np.iinfo(dtype)
        extremes = [info.min, info.max, 0, 1]
    array = np.resize(np.array(extremes, dtype), (3, 4, 5))
    array.flat[: 60 - len(extremes)] = np.arange(60 - len(extremes)) % 100
    path = write_idx(tmp_path / f"array-idx3{suffix}", array)

    result = data.read_idx(path)

    assert result.dtype == np.dtype(dtype)
    assert result.dtype.isnative
    assert result.shape == (3, 4, 5)
    assert result.flags.writeable
    np.testing.assert_array_equal(result, array)
    raw_start = path.read_bytes()[:2]
    assert (raw_start == b"\x1f\x8b") == (suffix == ".gz")


def test_write_idx_is_big_endian(tmp_path):
    path = write_idx(tmp_path / "small-idx1", np.array([1, 258], np.int16))
    assert path.read_bytes() == (
        b"\x00\x00\x0b\x01" + b"\x00\x00\x00\x02" + b"\x00\x01\x01\x02"
    )


def test_write_idx_accepts_big_endian_input(tmp_path):
    array = np.array([[1.5, -2.0]], ">f8")
    path = write_idx(tmp_path / "big-idx2", array)
    np.testing.assert_array_equal(data.read_idx(path), array)


def test_write_idx_gzip_is_deterministic(tmp_path):
    array = np.arange(100, dtype=np.uint8)
    first = write_idx(tmp_path / "a-idx1.gz", array).read_bytes()
    second = write_idx(tmp_path / "b-idx1.gz", array).read_bytes()
    assert first == second
    assert gzip.decompress(first) == idx_bytes(array)


@pytest.mark.parametrize("dtype", ["int64", "uint16", "bool", "complex64"])
def test_write_idx_rejects_unsupported_dtype(tmp_path, dtype):
    with pytest.raises(ValueError, match=dtype):
        write_idx(tmp_path / "x-idx1", np.zeros(3, dtype))


def test_read_idx_detects_gzip_by_magic_not_name(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"  # no .gz, but gzip inside
    path.write_bytes(gzip.compress(idx_bytes([7, 8, 9])))
    np.testing.assert_array_equal(data.read_idx(str(path)), [7, 8, 9])


def test_read_idx_zero_length_dimension(tmp_path):
    path = write_idx(tmp_path / "none-idx3", np.zeros((0, 28, 28), np.uint8))
    assert data.read_idx(path).shape == (0, 28, 28)


# --- load_mnist: the real data ---------------------------------------------


@pytest.fixture(scope="module")
def mnist():
    return data.load_mnist()


def test_load_mnist_shapes_and_dtypes(mnist):
    (x_train, y_train), (x_test, y_test) = mnist
    assert x_train.shape == (60000, 28, 28, 1)
    assert x_test.shape == (10000, 28, 28, 1)
    assert y_train.shape == (60000,)
    assert y_test.shape == (10000,)
    assert x_train.dtype == x_test.dtype == np.float32
    assert y_train.dtype == y_test.dtype == np.uint8


def test_load_mnist_value_range(mnist):
    (x_train, _), (x_test, _) = mnist
    for images in (x_train, x_test):
        assert images.min() == 0.0
        assert images.max() == 1.0


def test_load_mnist_label_counts(mnist):
    (_, y_train), (_, y_test) = mnist
    assert np.bincount(y_train, minlength=10).tolist() == TRAIN_LABEL_COUNTS
    assert np.bincount(y_test, minlength=10).tolist() == TEST_LABEL_COUNTS


def test_load_mnist_pixel_statistics(mnist):
    (x_train, _), _ = mnist
    assert x_train.mean(dtype=np.float64) == pytest.approx(0.13066, abs=1e-4)
    assert x_train.std(dtype=np.float64) == pytest.approx(0.30811, abs=1e-4)


def test_load_mnist_matches_independent_numpy(mnist):
    """The images equal raw uint8 / 255, read here with gzip and NumPy alone."""
    (x_train, y_train), (x_test, y_test) = mnist
    expected = {}
    for name in FILE_NAMES:
        with gzip.open(data.DEFAULT_DATA_DIR / f"{name}.gz", "rb") as file:
            content = file.read()
        assert hashlib.sha256(content).hexdigest() == data.MNIST_SHA256[name]
        offset = 16 if "images" in name else 8
        expected[name] = np.frombuffer(content, np.uint8, offset=offset)
    train_images = expected["train-images-idx3-ubyte"].reshape(60000, 28, 28, 1)
    test_images = expected["t10k-images-idx3-ubyte"].reshape(10000, 28, 28, 1)
    np.testing.assert_array_equal(x_train, (train_images / 255.0).astype(np.float32))
    np.testing.assert_array_equal(x_test, (test_images / 255.0).astype(np.float32))
    np.testing.assert_array_equal(y_train, expected["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(y_test, expected["t10k-labels-idx1-ubyte"])


def test_read_idx_real_labels():
    labels = data.read_idx(data.DEFAULT_DATA_DIR / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,)
    assert labels.dtype == np.uint8
    assert np.bincount(labels).tolist() == TEST_LABEL_COUNTS


def test_mnist_sha256_matches_shipped_files():
    for name, expected in data.MNIST_SHA256.items():
        content = gzip.decompress((data.DEFAULT_DATA_DIR / f"{name}.gz").read_bytes())
        assert hashlib.sha256(content).hexdigest() == expected


# --- load_mnist: synthetic files -------------------------------------------


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_load_mnist_synthetic(tmp_path, suffix):
    files = make_mnist_dir(tmp_path, suffix=suffix)

    (x_train, y_train), (x_test, y_test) = data.load_mnist(tmp_path, verify=False)

    assert x_train.shape == (12, 28, 28, 1)
    assert x_test.shape == (5, 28, 28, 1)
    np.testing.assert_array_equal(
        x_train[..., 0], files["train-images-idx3-ubyte"] / np.float32(255)
    )
    np.testing.assert_array_equal(y_train, files["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(y_test, files["t10k-labels-idx1-ubyte"])
    assert y_train.flags.writeable and x_train.flags.writeable


def test_load_mnist_accepts_str_path(tmp_path):
    make_mnist_dir(tmp_path)
    (x_train, _), _ = data.load_mnist(str(tmp_path), verify=False)
    assert x_train.shape == (12, 28, 28, 1)


def test_load_mnist_checksum_mismatch(tmp_path):
    make_mnist_dir(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    actual = hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()
    with pytest.raises(data.DataError) as error_info:
        data.load_mnist(tmp_path)  # verify=True: the real MNIST hashes
    assert_message(
        error_info,
        path,
        "checksum",
        data.MNIST_SHA256["train-images-idx3-ubyte"],
        actual,
    )


def test_load_mnist_checksum_patched(tmp_path, monkeypatch):
    make_mnist_dir(tmp_path)
    hashes = {
        name: hashlib.sha256(
            gzip.decompress((tmp_path / f"{name}.gz").read_bytes())
        ).hexdigest()
        for name in FILE_NAMES
    }
    monkeypatch.setattr(data, "MNIST_SHA256", dict(hashes))
    (x_train, _), _ = data.load_mnist(tmp_path)  # verify=True passes
    assert x_train.shape == (12, 28, 28, 1)

    wrong = "0" * 64
    monkeypatch.setitem(data.MNIST_SHA256, "t10k-labels-idx1-ubyte", wrong)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(data.DataError) as error_info:
        data.load_mnist(tmp_path)
    assert_message(
        error_info, path, "checksum", wrong, hashes["t10k-labels-idx1-ubyte"]
    )


def test_load_mnist_some_files_missing(tmp_path):
    make_mnist_dir(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(data.MissingDataError) as error_info:
        data.load_mnist(tmp_path, verify=False)
    assert_message(
        error_info,
        tmp_path,
        "missing",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
    )
    assert "train-images-idx3-ubyte.gz" not in str(error_info.value).split("found")[0]


def test_load_mnist_all_files_missing(tmp_path):
    with pytest.raises(data.MissingDataError) as error_info:
        data.load_mnist(tmp_path)
    assert isinstance(error_info.value, FileNotFoundError)
    assert_message(error_info, tmp_path, "missing", "found none of them", *FILE_NAMES)


def test_load_mnist_folder_that_does_not_exist(tmp_path):
    missing_dir = tmp_path / "no-such-folder"
    with pytest.raises(data.MissingDataError) as error_info:
        data.load_mnist(missing_dir)
    assert_message(error_info, missing_dir, "no such folder", "data_dir=")


def test_load_mnist_count_mismatch(tmp_path):
    make_mnist_dir(tmp_path, train_labels_idx1_ubyte=np.zeros(11, np.uint8))
    with pytest.raises(data.DataError) as error_info:
        data.load_mnist(tmp_path, verify=False)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    assert_message(error_info, path, "mismatch", "12 images", "11 labels")
    assert str(tmp_path / "train-labels-idx1-ubyte.gz") in str(error_info.value)


def test_load_mnist_label_out_of_range(tmp_path):
    labels = np.array([0, 1, 2, 10, 4], np.uint8)
    make_mnist_dir(tmp_path, t10k_labels_idx1_ubyte=labels)
    with pytest.raises(data.DataError) as error_info:
        data.load_mnist(tmp_path, verify=False)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    assert_message(error_info, path, "out of range", "label 10", "index 3")


@pytest.mark.parametrize(
    "images",
    [np.zeros((12, 784), np.uint8), np.zeros((12, 28, 28, 1), np.uint8)],
    ids=["2-d", "4-d"],
)
def test_load_mnist_images_wrong_ndim(tmp_path, images):
    make_mnist_dir(tmp_path, train_images_idx3_ubyte=images)
    with pytest.raises(data.DataError) as error_info:
        data.load_mnist(tmp_path, verify=False)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    assert_message(error_info, path, "wrong shape", "(n, 28, 28)")


def test_load_mnist_images_wrong_size(tmp_path):
    make_mnist_dir(tmp_path, t10k_images_idx3_ubyte=np.zeros((5, 27, 27), np.uint8))
    with pytest.raises(data.DataError) as error_info:
        data.load_mnist(tmp_path, verify=False)
    assert_message(error_info, tmp_path / "t10k-images-idx3-ubyte.gz", "wrong shape")


def test_load_mnist_labels_wrong_ndim(tmp_path):
    make_mnist_dir(tmp_path, train_labels_idx1_ubyte=np.zeros((12, 1), np.uint8))
    with pytest.raises(data.DataError) as error_info:
        data.load_mnist(tmp_path, verify=False)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    assert_message(error_info, path, "wrong shape", "1 dimension")


@pytest.mark.parametrize(
    "name, array",
    [
        ("train_images_idx3_ubyte", np.zeros((12, 28, 28), np.float32)),
        ("t10k_labels_idx1_ubyte", np.zeros(5, np.int16)),
    ],
)
def test_load_mnist_wrong_element_type(tmp_path, name, array):
    make_mnist_dir(tmp_path, **{name: array})
    with pytest.raises(data.DataError) as error_info:
        data.load_mnist(tmp_path, verify=False)
    path = tmp_path / f"{name.replace('_', '-')}.gz"
    assert_message(error_info, path, "element type", str(array.dtype), "uint8")


def test_load_mnist_corrupt_file_names_it(tmp_path):
    make_mnist_dir(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(data.DataError) as error_info:
        data.load_mnist(tmp_path, verify=False)
    assert_message(error_info, path, "truncated")


@pytest.fixture
def inflated(monkeypatch):
    """The length of each chunk zlib inflates from now on, recorded by wrapping its decompressor."""
    lengths, real_decompressobj = [], zlib.decompressobj

    class Counting:
        def __init__(self, *args, **kwargs):
            self.inner = real_decompressobj(*args, **kwargs)

        def decompress(self, data, max_length=0):
            out = self.inner.decompress(data, max_length)
            lengths.append(len(out))
            return out

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(zlib, "decompressobj", Counting)
    return lengths


def test_read_idx_refuses_a_gzip_bomb_while_decompressing(tmp_path, inflated):
    # 8 kB on disk that inflate to 8 MiB behind a header declaring 10 labels.
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(10) % 10) + bytes(8 << 20)))
    assert path.stat().st_size < 16 << 10
    with pytest.raises(data.DataError) as error_info:
        data.read_idx(path)
    assert_message(error_info, path, "decompresses to more than the 18 bytes")
    assert sum(inflated) == 1 << 20  # the first chunk (1 MiB), not all 8 MiB
    # It stops at the first byte past the declared size, whatever the chunk.
    inflated.clear()
    with pytest.raises(data._TooLarge):
        data._bounded_gunzip(path.read_bytes(), data.MAX_IDX_BYTES, chunk=1 << 16)
    assert sum(inflated) <= (1 << 16) + 1  # the first chunk (which holds the header), then one byte


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_rejects_a_header_with_too_many_dimensions(tmp_path, suffix):
    path = tmp_path / f"bad-idx3-ubyte{suffix}"
    content = bytes([0, 0, 0x08, 100]) + bytes(400)
    path.write_bytes(gzip.compress(content) if suffix else content)
    with pytest.raises(data.DataError) as error_info:
        data.read_idx(path)
    assert_message(error_info, path, "100 dimensions")


def test_epoch_batches_in_order_and_shuffled(mnist):
    (x_train, _), _ = mnist
    x = x_train[:300]
    in_order = data.EpochBatches(x, 128, epochs=3)
    assert in_order.steps == 2  # the remainder of 44 is left out
    assert len(in_order) == 6  # one sequence over all epochs
    for epoch in range(3):
        batches = [in_order[epoch * 2 + step][0] for step in range(2)]
        np.testing.assert_array_equal(np.concatenate(batches), x[:256])

    shuffled = data.EpochBatches(x, 128, epochs=6, shuffle=True, seed=5)

    def epoch_images(dataset, index_of_epoch):
        return np.concatenate([dataset[index_of_epoch * 2 + step][0] for step in range(2)])

    first = epoch_images(shuffled, 3)
    np.testing.assert_array_equal(first, x[np.random.default_rng([5, 3]).permutation(300)[:256]])
    assert not np.array_equal(first, epoch_images(shuffled, 4))
    np.testing.assert_array_equal(first, epoch_images(shuffled, 3))
    # A run resumed at epoch 2 starts its sequence there: its second epoch is epoch 3.
    resumed = data.EpochBatches(x, 128, epochs=6, shuffle=True, seed=5)
    resumed.first_epoch = 2
    np.testing.assert_array_equal(epoch_images(resumed, 1), first)


@pytest.mark.parametrize(
    "call, shape, message",
    [
        # A header declaring 5,000 images (3.9 MB), more than the 1 MiB a file may hold here.
        ("read_idx", [5_000, 28, 28], "declares 3,920,016 bytes, more than the 1,048,576"),
        # A header claiming 47 GB, far more than MNIST's training images (47 MB).
        ("load_mnist", [60_000, 28, 28, 1_000], "declares 47,040,000,020 bytes, more than the 47,040,016"),
    ],
)
def test_a_header_claiming_more_than_the_maximum_is_refused_after_the_first_chunk(
    tmp_path, inflated, call, shape, message
):
    make_mnist_dir(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    header = bytes([0, 0, 0x08, len(shape)]) + np.array(shape, ">u4").tobytes()
    path.write_bytes(gzip.compress(header + bytes(16 << 20)))  # 16 kB of gzip, 16 MiB inflated
    tracemalloc.start()
    try:
        with pytest.raises(data.DataError) as error_info:
            data.read_idx(path, max_bytes=1 << 20) if call == "read_idx" else data.load_mnist(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_message(error_info, path, message)
    assert sum(inflated) == 1 << 20  # the first chunk, which holds the header; nothing after it
    assert peak < 4 << 20, peak  # that chunk and a copy of it, not the 16 MiB
