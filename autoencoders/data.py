"""Datasets: the bundled offline default, and MNIST-format (IDX) datasets read or downloaded.

``load_dataset("digits")`` needs no network: scikit-learn ships the 8x8 handwritten digits.
``load_dataset("mnist" | "fashion-mnist" | "kmnist")`` looks for the four IDX files, each as
``NAME.gz`` or ``NAME``, in this order:

1. ``data_dir``, if given: all four must be there (nothing is downloaded when the user pointed
   at a directory, and nothing is ever written into it);
2. ``cache_dir/<dataset name>/`` (``default_cache_dir()`` when None);
3. the dataset's mirrors, when ``download=True``. The ``.gz`` bytes are checked against the
   published md5 *before* they are used or cached, and the cache file is written atomically.

Every file found locally is verified too: its md5 must be the published ``.gz`` md5, or the md5
of its decompressed content must be the known md5 of the uncompressed file (so a re-gzipped copy
of the real data loads). Every failure is a ``DataError`` with one line that names the file or
dataset, what was expected and what was found.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoencoders._files import atomic_write_bytes
from autoencoders._reader import format_bytes, memory_limit, read_bounded

DATASET_NAMES = ("digits", "mnist", "fashion-mnist", "kmnist")
OFFLINE_DEFAULT = "digits"
BINARIZATION_MODES = ("grey", "threshold", "dynamic")


class DataError(Exception):
    """A dataset that cannot be loaded: one line naming the file or dataset and the problem."""


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Train and test splits of one dataset, ready for the models.

    Attributes
    ----------
    name : str
        One of ``DATASET_NAMES``.
    train_images : np.ndarray
        (N, 1, H, W) float32 grey levels in [0, 1].
    train_labels : np.ndarray
        (N,) int64 class labels.
    test_images : np.ndarray
        (M, 1, H, W) float32 grey levels in [0, 1].
    test_labels : np.ndarray
        (M,) int64 class labels.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    def __post_init__(self):
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            if not (isinstance(images, np.ndarray) and images.dtype == np.float32
                    and images.ndim == 4 and images.shape[1] == 1):
                raise ValueError(
                    f"Dataset({self.name!r}): {split}_images must be a float32 array of shape "
                    f"(N, 1, H, W), got {_describe(images)}"
                )
            if not (isinstance(labels, np.ndarray) and labels.dtype == np.int64 and labels.ndim == 1):
                raise ValueError(
                    f"Dataset({self.name!r}): {split}_labels must be an int64 array of shape (N,), "
                    f"got {_describe(labels)}"
                )
            if len(labels) != len(images):
                raise ValueError(
                    f"Dataset({self.name!r}): {len(images)} {split} images but {len(labels)} labels"
                )
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise ValueError(
                f"Dataset({self.name!r}): train images are {self.train_images.shape[1:]} but test "
                f"images are {self.test_images.shape[1:]}"
            )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(1, H, W), the shape of one image."""
        return tuple(int(side) for side in self.train_images.shape[1:])

    def __repr__(self) -> str:
        # The default dataclass repr would print four (truncated) arrays; sizes say more.
        return (
            f"Dataset(name={self.name!r}, train={len(self.train_labels)}, "
            f"test={len(self.test_labels)}, image_shape={self.image_shape})"
        )


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


# -- IDX files -------------------------------------------------------------------------------

# IDX type byte -> element dtype (always big-endian in the file).
_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dtype.newbyteorder("="): code for code, dtype in _IDX_TYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
# The most dimensions an ndarray may have; an IDX header may declare up to 255.
_MAX_NDIM = 64 if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else 32
# Deflate cannot inflate one byte to more than 1032 (a 258-byte match costs at least 2 bits), so
# a gzip file of n bytes holds at most 1032 * n: a header claiming more is refused unread.
_MAX_DEFLATE_RATIO = 1032
_INFLATE_CHUNK = 1 << 20  # inflate this much at a time: memory follows the data, not the header


def _read_bytes(path: Path) -> bytes:
    """The bytes of data file ``path``: a regular file (a FIFO or a device is refused without
    reading it) no larger than the memory available, else a one-line DataError naming it."""
    limit, reason = memory_limit()
    return read_bounded(path, limit, DataError, reason=reason)


def _corrupt_gzip(path: Path, error: BaseException) -> DataError:
    reason = " ".join(str(error).split()) or type(error).__name__  # one line
    return DataError(f"{path}: corrupt or truncated gzip stream ({reason})")


# What a damaged gzip stream raises: BadGzipFile (an OSError) for a bad header or CRC, EOFError
# for a stream that ends early, zlib.error for bad deflate data.
_GZIP_ERRORS = (OSError, EOFError, zlib.error)


def _decompress(data: bytes, path: Path) -> bytes:
    """The content of ``data``: gunzipped if it starts with the gzip magic, else ``data`` itself.

    For bytes already verified by checksum; ``read_idx`` inflates untrusted files with
    ``_inflate_idx``, which never inflates past what the IDX header inside declares.
    """
    # Decided by content, not by name: an IDX file starts with two zero bytes, gzip with 1f 8b.
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except _GZIP_ERRORS as error:
        raise _corrupt_gzip(path, error) from None


def _content_md5(data: bytes, path: Path) -> str:
    """md5 of the content of ``data`` (gunzipped when it is gzip), inflated a chunk at a time and
    never held whole: the content of a file that fails its checksum is not worth the memory."""
    if not data.startswith(_GZIP_MAGIC):
        return _md5(data)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            while chunk := stream.read(_INFLATE_CHUNK):
                digest.update(chunk)
    except _GZIP_ERRORS as error:
        raise _corrupt_gzip(path, error) from None
    return digest.hexdigest()


def _shape_text(shape: tuple[int, ...]) -> str:
    """A shape for a one-line message: at most 8 sides shown (an IDX header may declare 255)."""
    if len(shape) <= 8:
        return str(shape)
    return f"({', '.join(map(str, shape[:4]))}, ..., {', '.join(map(str, shape[-2:]))}) [{len(shape)} dimensions]"


def _parse_header(content: bytes, path: Path) -> tuple[np.dtype, tuple[int, ...], int, int]:
    """(dtype, shape, header size, payload size in bytes) from the start of IDX ``content``.

    Only the header is read, so this runs before any payload is inflated or allocated.
    """
    if len(content) < 4:
        raise DataError(
            f"{path}: too short for an IDX header (need at least 4 bytes, found {len(content)})"
        )
    if content[:2] != b"\0\0":
        raise DataError(
            f"{path}: not an IDX file (magic must start with two zero bytes, found "
            f"{content[:4].hex(' ')})"
        )
    code, ndim = content[2], content[3]
    if code not in _IDX_TYPES:
        known = ", ".join(f"0x{known:02X}" for known in _IDX_TYPES)
        raise DataError(f"{path}: unknown IDX type code 0x{code:02X} (expected one of {known})")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions (expected at least 1)")
    if ndim > _MAX_NDIM:
        raise DataError(
            f"{path}: IDX header declares {ndim} dimensions (expected 1 to {_MAX_NDIM}, the most "
            f"a NumPy array can have)"
        )
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise DataError(
            f"{path}: truncated IDX header ({ndim} dimensions need {header_size} bytes, "
            f"found {len(content)})"
        )
    shape = tuple(int(side) for side in np.frombuffer(content, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[code]
    expected = dtype.itemsize * int(np.prod(shape, dtype=object))  # Python ints: no overflow
    return dtype, shape, header_size, expected


def _check_payload_size(found: int, expected: int, dtype: np.dtype, shape: tuple, path: Path,
                        more: bool = False) -> None:
    """Refuse a payload of ``found`` bytes where the header says ``expected`` (``more``: at least
    ``found``, the rest was not counted)."""
    if found < expected:
        raise DataError(
            f"{path}: truncated IDX payload (shape {_shape_text(shape)} of {dtype.name} needs "
            f"{expected} bytes, found {found})"
        )
    if found > expected:
        count = f"more than {found - expected}" if more else f"{found - expected}"
        raise DataError(
            f"{path}: {count} unexpected trailing bytes after the IDX payload "
            f"(shape {_shape_text(shape)} of {dtype.name} needs {expected} bytes)"
        )


def _idx_array(content: bytes, offset: int, dtype: np.dtype, shape: tuple, path: Path) -> np.ndarray:
    # A zero-copy view of the bytes for uint8 (the MNIST case); multi-byte types are swapped
    # to native byte order once here so that every later operation runs at full speed.
    try:
        array = np.frombuffer(content, dtype=dtype, offset=offset).reshape(shape)
    except ValueError as error:  # a side of 0 beside sides whose product overflows NumPy's index
        raise DataError(f"{path}: IDX shape {_shape_text(shape)} cannot be held in a NumPy array "
                        f"({error})") from None
    return array.astype(dtype.newbyteorder("="), copy=False)


def _parse_idx(content: bytes, path: Path) -> np.ndarray:
    """Decode IDX ``content`` (already decompressed); every inconsistency is a DataError."""
    dtype, shape, header_size, expected = _parse_header(content, path)
    _check_payload_size(len(content) - header_size, expected, dtype, shape, path)
    return _idx_array(content, header_size, dtype, shape, path)


def _check_fits_in_memory(expected: int, dtype: np.dtype, shape: tuple, path: Path) -> None:
    """Refuse, before inflating it, a payload of ``expected`` bytes larger than the memory available."""
    limit, reason = memory_limit()
    if limit is not None and expected > limit:
        raise DataError(
            f"{path}: the IDX header declares {format_bytes(expected)} ({expected} bytes: shape "
            f"{_shape_text(shape)} of {dtype.name}), larger than the limit of {format_bytes(limit)} "
            f"({reason}); refusing to inflate it"
        )


def _inflate_idx(data: bytes, path: Path) -> np.ndarray:
    """Decode a gzipped IDX file, inflating no more than its header declares.

    The header is inflated first. A header that declares more than ``len(data)`` bytes could
    inflate to is refused before anything else is inflated; otherwise inflating stops one
    chunk past the declared size. So memory follows what the file holds: neither a header
    claiming 10**12 elements nor a gzip bomb behind a small header allocates more.
    """
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            head = stream.read(4)
            if len(head) == 4 and head[:2] == b"\0\0":
                head += stream.read(4 * head[3])
            dtype, shape, header_size, expected = _parse_header(head, path)
            if expected > _MAX_DEFLATE_RATIO * len(data):
                raise DataError(
                    f"{path}: truncated IDX payload (shape {_shape_text(shape)} of {dtype.name} needs "
                    f"{expected} bytes; a gzip file of {len(data)} bytes inflates to at most "
                    f"{_MAX_DEFLATE_RATIO * len(data)})"
                )
            _check_fits_in_memory(expected, dtype, shape, path)
            parts, found = [head], 0
            while found <= expected:  # reads one byte past the payload, or to the end (CRC checked)
                chunk = stream.read(min(_INFLATE_CHUNK, expected + 1 - found))
                if not chunk:
                    break
                parts.append(chunk)
                found += len(chunk)
            if found > expected:
                # Count what follows, up to a chunk more: the file is refused either way, and a
                # gzip bomb past a small header is not worth inflating to the end.
                found += len(stream.read(_INFLATE_CHUNK))
                _check_payload_size(found, expected, dtype, shape, path, more=bool(stream.read(1)))
    except _GZIP_ERRORS as error:
        raise _corrupt_gzip(path, error) from None
    _check_payload_size(found, expected, dtype, shape, path)
    return _idx_array(b"".join(parts), header_size, dtype, shape, path)


def read_idx(path) -> np.ndarray:
    """Read an IDX file, gzipped or raw (decided by its first bytes).

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    np.ndarray
        Shape as declared by the header, native byte order, dtype uint8, int8, int16, int32,
        float32 or float64. uint8 arrays are read-only views of the file's bytes (no copy);
        copy before writing into them.

    Raises
    ------
    DataError
        Naming ``path``: unreadable file, not a regular file (a FIFO, a device...), larger than
        the memory available (the file, or the payload its gzip header declares), corrupt gzip
        stream, bad magic, unknown type code, more dimensions than NumPy holds, truncated
        header, or a payload shorter or longer than the dimensions say. The header is checked
        against the size of the file before the payload is inflated or allocated.
    """
    path = Path(path)
    data = _read_bytes(path)
    if data.startswith(_GZIP_MAGIC):  # by content, not by name: IDX starts with 00 00
        return _inflate_idx(data, path)
    return _parse_idx(data, path)


def write_idx(path, array) -> None:
    """Write ``array`` as an IDX file, atomically; gzipped if the name ends in ``.gz``.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its directory must exist.
    array : np.ndarray
        1 to 255 dimensions of uint8, int8, int16, int32, float32 or float64 (any byte order).
        MNIST's images are 3-D uint8 (magic 2051), its labels 1-D uint8 (magic 2049).
    """
    path = Path(path)
    if not isinstance(array, np.ndarray):
        raise TypeError(f"write_idx({path}): expected a NumPy array, got {type(array).__name__}")
    native = array.dtype.newbyteorder("=") if array.dtype.byteorder != "|" else array.dtype
    if native not in _IDX_CODES:
        raise TypeError(
            f"write_idx({path}): IDX stores uint8, int8, int16, int32, float32 or float64, "
            f"got {array.dtype}"
        )
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"write_idx({path}): IDX needs 1 to 255 dimensions, got shape {array.shape}")
    if any(side >= 2**32 for side in array.shape):
        raise ValueError(f"write_idx({path}): IDX dimensions must be below 2**32, got {array.shape}")
    code = _IDX_CODES[native]
    header = bytes((0, 0, code, array.ndim)) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = np.ascontiguousarray(array, dtype=_IDX_TYPES[code]).tobytes()
    data = header + payload
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)  # mtime=0: same array, same bytes
    atomic_write_bytes(path, data)


# -- named IDX datasets ----------------------------------------------------------------------

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# Tried in order. MNIST's original host (yann.lecun.com) is gone; this is torchvision's first mirror.
_MIRRORS = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "kmnist": ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
}

# md5 of the published NAME.gz files.
_GZ_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "kmnist": {
        "train-images-idx3-ubyte": "bdb82020997e1d708af4cf47b453dcf7",
        "train-labels-idx1-ubyte": "e144d726b3acfaa3e44228e80efcd344",
        "t10k-images-idx3-ubyte": "5c965bf0a639b31b8f53240b1b52f4d7",
        "t10k-labels-idx1-ubyte": "7320c461ea6c1c855c0b718fb2a4b134",
    },
}

# md5 of the uncompressed content, which survives re-gzipping. None published for KMNIST.
_RAW_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
    "kmnist": {},
}

_DOWNLOAD_TIMEOUT_S = 30
_OFFLINE_ADVICE = (
    "pass --data-dir with the four IDX files, or train on the offline default dataset "
    f"{OFFLINE_DEFAULT!r}"
)


def default_cache_dir() -> Path:
    """Where downloads are kept: $AUTOENCODERS_CACHE, else $XDG_CACHE_HOME/autoencoders, else
    ~/.cache/autoencoders."""
    explicit = os.environ.get("AUTOENCODERS_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():  # the XDG spec says to ignore a relative path
        return Path(xdg) / "autoencoders"
    return Path.home() / ".cache" / "autoencoders"


def _find(directory: Path, stem: str) -> Path | None:
    """``directory/stem.gz`` or ``directory/stem``, the .gz first (its md5 is always published).

    Whatever is there is returned, not only a regular file: a FIFO, a device or a dangling link
    under that name is then refused by ``_read_bytes`` naming what it is, not reported missing."""
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return None


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _verified_content(name: str, stem: str, path: Path, data: bytes, in_cache: bool) -> bytes:
    """The IDX content of a local file whose bytes or content match a known md5."""
    gz_md5 = _GZ_MD5[name][stem]
    raw_md5 = _RAW_MD5[name].get(stem)
    file_md5 = _md5(data)
    if file_md5 == gz_md5:
        return _decompress(data, path)
    content_md5 = _content_md5(data, path)  # hashed as it inflates: untrusted bytes are not held
    if raw_md5 is not None and content_md5 == raw_md5:
        return _decompress(data, path)
    hint = "; delete it to download it again" if in_cache else ""
    if raw_md5 is None:
        raise DataError(
            f"{path}: checksum mismatch for {name} {stem}: md5 {file_md5}, expected {gz_md5} "
            f"(the published {stem}.gz); no checksum of the uncompressed file is published, so "
            f"use the original {stem}.gz{hint}"
        )
    found = f"md5 {file_md5}" if content_md5 == file_md5 else f"md5 {file_md5} (content {content_md5})"
    raise DataError(
        f"{path}: checksum mismatch for {name} {stem}: {found}, expected {gz_md5} (the "
        f"published {stem}.gz) or content md5 {raw_md5} (uncompressed){hint}"
    )


def _fetch(url: str, label: str) -> bytes:
    """The bytes at ``url``; a tqdm bar on stderr when it is a terminal. Network errors propagate."""
    import urllib.request  # lazily: it pulls in http.client, email and ssl

    with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        bar = None
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:  # pragma: no cover - tqdm is a dependency; the bar is a nicety
                tqdm = None
            if tqdm is not None:
                bar = tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024)
        chunks = []
        try:
            while chunk := response.read(1 << 16):
                chunks.append(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    return b"".join(chunks)


def _download(name: str, stem: str, cache: Path) -> bytes:
    """Download ``stem.gz`` from the first mirror that serves the published bytes; cache them."""
    import http.client
    import urllib.error

    filename = f"{stem}.gz"
    expected = _GZ_MD5[name][stem]
    failures, mismatches = [], []
    for mirror in _MIRRORS[name]:
        url = mirror + filename
        try:
            data = _fetch(url, f"{name} {filename}")
        except urllib.error.HTTPError as error:
            failures.append(f"{url}: HTTP {error.code} {error.reason}")
            continue
        except urllib.error.URLError as error:
            failures.append(f"{url}: {error.reason}")
            continue
        except (OSError, http.client.HTTPException) as error:  # timeouts, resets, short reads
            failures.append(f"{url}: {error or type(error).__name__}")
            continue
        found = _md5(data)
        if found != expected:
            mismatches.append(f"{url} has md5 {found}")
            continue
        try:
            cache.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(cache / filename, data)
        except OSError as error:
            raise DataError(
                f"{name}: cannot write {filename} to the cache {cache} ({error.strerror or error}); "
                "set AUTOENCODERS_CACHE to a writable directory"
            ) from None
        return data
    if mismatches:
        raise DataError(
            f"{name}: checksum mismatch for downloaded {filename}: {'; '.join(mismatches)}, "
            f"expected {expected}; nothing was cached; {_OFFLINE_ADVICE}"
        )
    reasons = "; ".join(" ".join(str(reason).split()) for reason in failures)  # one line
    raise DataError(f"{name}: could not download {filename} ({reasons}); {_OFFLINE_ADVICE}")


def _describe_files() -> str:
    return ", ".join(_IDX_FILES) + " (each as .gz or uncompressed)"


def _load_idx_dataset(name: str, data_dir, cache_dir, download: bool) -> Dataset:
    contents: dict[str, tuple[Path, bytes]] = {}
    if data_dir is not None:
        directory = Path(data_dir).expanduser()
        if not directory.is_dir():
            raise DataError(f"{name}: data dir {directory} is not a directory; expected one with {_describe_files()}")
        found = {stem: _find(directory, stem) for stem in _IDX_FILES}
        missing = [stem for stem, path in found.items() if path is None]
        if missing:
            raise DataError(
                f"{name}: data dir {directory} lacks {', '.join(missing)} (looked for NAME.gz and "
                f"NAME); it needs {_describe_files()}"
            )
        for stem, path in found.items():
            contents[stem] = (path, _verified_content(name, stem, path, _read_bytes(path), in_cache=False))
    else:
        cache = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / name
        missing = [stem for stem in _IDX_FILES if _find(cache, stem) is None]
        if missing and not download:
            raise DataError(
                f"{name}: {', '.join(missing)} not in the cache {cache} and download=False; "
                f"{_OFFLINE_ADVICE}"
            )
        for stem in _IDX_FILES:
            path = _find(cache, stem)
            if path is None:  # verified by md5 before it reached the cache
                path = cache / f"{stem}.gz"
                contents[stem] = (path, _decompress(_download(name, stem, cache), path))
            else:
                contents[stem] = (path, _verified_content(name, stem, path, _read_bytes(path), in_cache=True))

    arrays = {stem: _parse_idx(content, path) for stem, (path, content) in contents.items()}
    splits = []
    for prefix in ("train", "t10k"):
        images_stem, labels_stem = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
        images, labels = arrays[images_stem], arrays[labels_stem]
        images_path, labels_path = contents[images_stem][0], contents[labels_stem][0]
        if images.dtype != np.uint8 or images.ndim != 3:
            raise DataError(
                f"{images_path}: expected IDX images (magic 2051: uint8, 3 dimensions), found "
                f"{images.dtype} with shape {images.shape}"
            )
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise DataError(
                f"{labels_path}: expected IDX labels (magic 2049: uint8, 1 dimension), found "
                f"{labels.dtype} with shape {labels.shape}"
            )
        if len(images) != len(labels):
            raise DataError(
                f"{labels_path}: {len(labels)} labels but {images_path.name} has {len(images)} images"
            )
        if len(images) == 0:
            raise DataError(f"{images_path}: expected at least one image, found none")
        if labels.max() > 9:
            raise DataError(f"{labels_path}: labels must be 0..9, found {int(labels.max())}")
        # One float32 array, divided in float32 exactly as torchvision's ToTensor does.
        scaled = np.empty((len(images), 1, *images.shape[1:]), dtype=np.float32)
        np.divide(images[:, None], np.float32(255), out=scaled, dtype=np.float32)
        splits += [scaled, labels.astype(np.int64)]
    if splits[0].shape[2:] != splits[2].shape[2:]:
        raise DataError(
            f"{name}: train images are {splits[0].shape[2:]} but test images are {splits[2].shape[2:]}"
        )
    return Dataset(name, *splits)


# -- the offline default ---------------------------------------------------------------------

_DIGITS_TEST_SIZE = 297  # the last 297 of 1797: 27..33 of each digit, 1500 left to train


def _load_digits() -> Dataset:
    try:
        from sklearn.datasets import load_digits  # lazily: scikit-learn takes a second to import
    except ImportError:
        raise DataError(
            f"{OFFLINE_DEFAULT}: needs scikit-learn, which bundles the digits (pip install scikit-learn)"
        ) from None
    bunch = load_digits()
    # 0..16 ink counts -> [0, 1]; both exact in float32.
    images = (bunch.images.astype(np.float32) / np.float32(16))[:, None]
    labels = bunch.target.astype(np.int64)
    split = len(labels) - _DIGITS_TEST_SIZE
    # The file cycles through the digits, so a fixed tail split is balanced without shuffling.
    return Dataset(
        OFFLINE_DEFAULT,
        np.ascontiguousarray(images[:split]),
        labels[:split].copy(),
        np.ascontiguousarray(images[split:]),
        labels[split:].copy(),
    )


def load_dataset(name: str = OFFLINE_DEFAULT, data_dir=None, cache_dir=None, download: bool = True) -> Dataset:
    """Load a dataset by name, verified, as float32 images in [0, 1].

    Parameters
    ----------
    name : str
        One of ``DATASET_NAMES``. ``"digits"`` (the default) is scikit-learn's 8x8 digits, split
        deterministically: the first 1500 images train, the last 297 test. It never touches the
        network.
    data_dir : str or os.PathLike, optional
        A directory holding the four IDX files (``NAME.gz`` or ``NAME``). When given it must
        hold all four; it is only read. Not accepted for ``"digits"``.
    cache_dir : str or os.PathLike, optional
        Where downloads are kept, under a subdirectory per dataset; ``default_cache_dir()`` when
        None.
    download : bool
        Whether files missing from the cache may be downloaded.

    Returns
    -------
    Dataset
        ``train_images`` (N, 1, H, W) and ``test_images`` (M, 1, H, W) float32 in [0, 1];
        ``train_labels`` (N,) and ``test_labels`` (M,) int64 in 0..9.

    Raises
    ------
    DataError
        Unknown name; missing files; a checksum mismatch; a malformed IDX file; no network.
    """
    if name not in DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")
    if name == OFFLINE_DEFAULT:
        if data_dir is not None:
            # Silently ignoring a directory the user named would hide a mistake.
            raise DataError(
                f"{OFFLINE_DEFAULT}: is bundled with scikit-learn and takes no --data-dir "
                f"(got {data_dir}); --data-dir is for {', '.join(DATASET_NAMES[1:])}"
            )
        return _load_digits()
    return _load_idx_dataset(name, data_dir, cache_dir, download)


# -- binarization ----------------------------------------------------------------------------


def binarize(images: np.ndarray, mode: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """Grey levels, or 0/1 pixels for a Bernoulli likelihood.

    Parameters
    ----------
    images : np.ndarray
        Any shape, float, values in [0, 1].
    mode : str
        ``"grey"``: ``images`` itself, unchanged (not a copy). ``"threshold"``: ``images > 0.5``,
        fixed. ``"dynamic"``: a fresh Bernoulli sample per call, pixel on with probability equal
        to its grey level.
    rng : np.random.Generator, optional
        Required for ``"dynamic"``; its draws are float64 whatever the image dtype, so a seed
        gives the same sample for float32 and float64 images.

    Returns
    -------
    np.ndarray
        Same shape and dtype as ``images``.
    """
    if mode not in BINARIZATION_MODES:
        raise ValueError(f"binarize: mode must be one of {', '.join(BINARIZATION_MODES)}, got {mode!r}")
    if not isinstance(images, np.ndarray):
        raise TypeError(f"binarize: images must be a NumPy array, got {type(images).__name__}")
    if mode == "grey":
        return images
    if mode == "threshold":
        return (images > 0.5).astype(images.dtype)
    if rng is None:
        raise ValueError("binarize: mode 'dynamic' needs rng, a np.random.Generator (e.g. np.random.default_rng(seed))")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"binarize: rng must be a np.random.Generator, got {type(rng).__name__}")
    return (rng.random(images.shape) < images).astype(images.dtype)
