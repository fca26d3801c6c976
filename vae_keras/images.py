"""Your own images: a folder of PNG or JPEG files or a NumPy array file, as float32 in [0, 1], with a test split."""

import contextlib
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vae_keras.config import MAX_IMAGE_SIDE, MIN_IMAGE_SIDE, check_image_shape
from vae_keras.data import DataError, MissingDataError

# The files of a folder that are read as images (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# PIL's modes of images without colour; every other mode is read as RGB.
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
# The share of the memory available that the images may take as float32.
MEMORY_SHARE = 0.8


def load_images(path, size=None, test_fraction=0.1, seed=0, channels=None):
    """Reads your own images into float32 arrays in [0, 1], shape (N, H, W, C), and holds out a test split.

    `path`: a folder of PNG or JPEG files (read in the order of their paths, subfolders included; other files are
    skipped), or an `.npy` file, or an `.npz` file with one array, an array named `images`, or arrays `x_train` and
    `x_test` (then the split is theirs). An array is (N, H, W) grey or (N, H, W, 1 or 3), of uint8 (0-255, divided
    by 255) or floats in [0, 1]. `size`: `(H, W)` to resize every image to (Lanczos); None: every image must already
    share one size. `test_fraction`: the share held out for the test set, drawn with `seed`. `channels`: 1 (grey)
    or 3 (colour); None: 1 when every file is grey, else 3.

    Returns `((x_train, None), (x_test, None))`, as `load_mnist` returns MNIST, with no labels.

    Raises:
        MissingDataError: no such file or folder.
        DataError: a folder without image files, an unreadable image (named), images of several sizes without
            `size`, an array of the wrong rank, type or range, too few images for a test split, or more images
            than memory can hold.
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, received test_fraction={test_fraction!r}")
    images = read_images(path, size, channels, split=True)
    if isinstance(images, tuple):  # an .npz file's x_train and x_test: its own split
        return tuple((part, None) for part in images)
    path = Path(path)
    if len(images) < 2:
        raise DataError(f"{path}: {len(images)} image(s), too few to hold out a test split; give at least 2.",
                        path=path)
    n_test = min(len(images) - 1, max(1, round(test_fraction * len(images))))
    order = np.random.default_rng([seed, 2]).permutation(len(images))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return (images[train], None), (images[test], None)


def read_images(path, size=None, channels=None, split=False):
    """Reads images as `load_images` does, without a test split: one float32 array (N, H, W, C) in [0, 1].

    With `split`, an .npz file's `x_train` and `x_test` come back as a pair of arrays; without it, joined into one.
    """
    path = Path(path)
    if size is not None:
        size = check_image_shape("size", size, channels=False)
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 (grey), 3 (colour) or None, received channels={channels!r}")
    if not path.exists():
        raise MissingDataError(f"{path}: no such file or folder of images.", path=path)
    if path.is_dir():
        return _read_folder(path, size, channels)
    if path.suffix.lower() not in (".npy", ".npz"):
        raise DataError(f"{path}: not a folder, .npy or .npz file; give a folder of PNG or JPEG files, "
                        "or a NumPy array file.", path=path)
    arrays = _read_arrays(path)
    if not isinstance(arrays, tuple):
        return _as_images(arrays, path, size, channels)
    parts = [_as_images(array, f"{path} ({key})", size, channels) for key, array in arrays]
    if parts[0].shape[1:] != parts[1].shape[1:]:
        raise DataError(f"{path}: x_train and x_test hold images of shapes {parts[0].shape[1:]} and "
                        f"{parts[1].shape[1:]}; give a size to resize them to (size=(H, W), --resize HxW).", path=path)
    return tuple(parts) if split else np.concatenate(parts)


def _read_folder(folder, size, channels):
    """The image files of `folder`, decoded into one float32 array allocated once (its size checked first)."""
    files = sorted(file for file in folder.rglob("*")
                   if file.suffix.lower() in IMAGE_SUFFIXES and not file.name.startswith(".") and file.is_file())
    if not files:
        others = [entry.name for entry in sorted(folder.iterdir())][:5]
        found = f"it holds {', '.join(others)}{' ...' if len(others) == 5 else ''}" if others else "it is empty"
        raise DataError(f"{folder}: no PNG or JPEG files ({found}).", path=folder)
    shape, grey, first = None, True, None
    for file in files:  # headers only: the size and mode of each file, before any pixel is decoded
        try:
            with Image.open(file) as image:
                file_size, mode = (image.height, image.width), image.mode
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
            raise _unreadable(file, error) from None
        grey = grey and mode in GREY_MODES
        if size is None and shape is not None and file_size != shape:
            raise DataError(f"{file}: {file_size[0]}x{file_size[1]} pixels, but {first} is {shape[0]}x{shape[1]}; "
                            "give a size to resize them all to (size=(H, W), --resize HxW).", path=file)
        shape, first = shape or file_size, first or file
    height, width = size or shape
    channels = channels or (1 if grey else 3)
    images = _allocate(folder, len(files), (height, width, channels))
    for index, file in enumerate(files):
        try:
            with Image.open(file) as image:
                image = image.convert("L" if channels == 1 else "RGB")
                if image.size != (width, height):
                    image = image.resize((width, height), Image.Resampling.LANCZOS)
                pixels = np.asarray(image, dtype=np.float32)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
            raise _unreadable(file, error) from None
        np.divide(pixels.reshape(height, width, channels), np.float32(255), out=images[index])
    return images


def _read_arrays(path):
    """The array of an .npy file, or of an .npz file; a pair of (key, array) for an .npz with x_train and x_test."""
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False)
        with np.load(path, allow_pickle=False) as arrays:
            keys = list(arrays.keys())
            if "x_train" in keys and "x_test" in keys:
                return (("x_train", arrays["x_train"]), ("x_test", arrays["x_test"]))
            if len(keys) == 1 or "images" in keys:
                return arrays[keys[0] if len(keys) == 1 else "images"]
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: not a readable NumPy file ({type(error).__name__}: {error}).", path=path) from None
    raise DataError(f"{path}: holds the arrays {', '.join(keys) or 'none'}; name the images 'images' (or 'x_train' "
                    "and 'x_test'), or save one array.", path=path)


def _as_images(array, path, size, channels):
    """An image array as float32 (N, H, W, C) in [0, 1]: checked, scaled, resized; `path` names it in errors."""
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[3] not in (1, 3) or len(array) == 0:
        raise DataError(f"{path}: an array of shape {array.shape}; images are (N, H, W) grey or (N, H, W, C) with "
                        "C = 1 (grey) or 3 (colour), N >= 1.", path=path)
    if array.dtype != np.uint8 and array.dtype.kind != "f":
        raise DataError(f"{path}: an array of {array.dtype}; images are uint8 (0-255) or floats in [0, 1].", path=path)
    count, height, width, depth = array.shape
    height, width = size or (height, width)
    channels = channels or depth
    images = _allocate(path, count, (height, width, channels))
    for start in range(0, count, 1024):  # in chunks: an .npy file is mapped, not read whole
        chunk = np.asarray(array[start : start + 1024])
        if chunk.dtype == np.uint8:
            chunk = np.divide(chunk, np.float32(255), dtype=np.float32)
        else:
            chunk = chunk.astype(np.float32)
            finite = np.isfinite(chunk)
            if not finite.all() or chunk.min() < 0 or chunk.max() > 1:
                values = chunk[finite]
                span = f"from {values.min():g} to {values.max():g}" if values.size else "none finite"
                raise DataError(f"{path}: values {span}{'' if finite.all() else ', and NaN or infinity'} in images "
                                f"{start} to {start + len(chunk) - 1}; float images must lie in [0, 1] (uint8 0-255 "
                                "is divided by 255 itself).", path=path)
        if chunk.shape[3] != channels:  # grey to colour by repeating, colour to grey by ITU-R 601 luma as PIL
            chunk = np.repeat(chunk, 3, axis=3) if channels == 3 else chunk @ np.float32([0.299, 0.587, 0.114])[:, None]
        if chunk.shape[1:3] != (height, width):
            chunk = np.stack([_resized(image, height, width) for image in chunk])
        images[start : start + len(chunk)] = chunk
    return images


def _resized(image, height, width):
    """One float image (H, W, C) resized with Lanczos, per channel (PIL's float mode), clipped to [0, 1]."""
    planes = [np.asarray(Image.fromarray(image[..., c]).resize((width, height), Image.Resampling.LANCZOS))
              for c in range(image.shape[2])]
    return np.clip(np.stack(planes, axis=2), 0.0, 1.0)


def _allocate(path, count, shape):
    """A float32 array for `count` images of `shape` (H, W, C); a DataError when their sides are out of the
    networks' range, or when they would not fit in memory."""
    height, width, _ = shape
    if not (MIN_IMAGE_SIDE <= height <= MAX_IMAGE_SIDE and MIN_IMAGE_SIDE <= width <= MAX_IMAGE_SIDE):
        raise DataError(f"{path}: images of {height}x{width} pixels; the networks take sides from {MIN_IMAGE_SIDE} "
                        f"to {MAX_IMAGE_SIDE} pixels: give a size to resize them to (size=(H, W), --resize HxW).",
                        path=path)
    needed = count * math.prod(shape) * 4
    available = _available_memory()
    if available is not None and needed > MEMORY_SHARE * available:
        raise DataError(f"{path}: {count:,} images of {'x'.join(map(str, shape))} need {needed / 2**30:.1f} GiB as "
                        f"float32, more than the {MEMORY_SHARE * available / 2**30:.1f} GiB of memory free for them; "
                        "resize them smaller (--resize) or use fewer.", path=path)
    return np.empty((count, *shape), dtype=np.float32)


def _available_memory():
    """The bytes of memory available now (Linux's MemAvailable, else the physical pages free), or None."""
    with contextlib.suppress(OSError):
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _unreadable(file, error):
    return DataError(f"{file}: not a readable PNG or JPEG image ({type(error).__name__}: {error}).", path=file)
