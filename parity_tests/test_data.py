"""autoencoders.data: strict IDX files, verified datasets (local, cached, downloaded), binarization.

Downloads are tested against a local HTTP server on 127.0.0.1 serving a temporary directory,
with the checksum table patched to the served files; nothing here touches the real network or
writes outside tmp_path.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoencoders import data
from autoencoders.data import (
    BINARIZATION_MODES,
    DATASET_NAMES,
    OFFLINE_DEFAULT,
    DataError,
    Dataset,
    binarize,
    default_cache_dir,
    load_dataset,
    read_idx,
    write_idx,
)
from parity_tests.mnist import MNIST_DIR
from parity_tests.strategies import seeds, shapes

IDX_FILES = data._IDX_FILES
IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
TYPE_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def md5(payload: bytes) -> str:
    return hashlib.md5(payload).hexdigest()


def idx_bytes(code: int, shape, payload: bytes) -> bytes:
    """A hand-built IDX file, so malformed ones can be made on purpose."""
    return bytes((0, 0, code, len(shape))) + np.asarray(shape, dtype=">u4").tobytes() + payload


def unchained(error: BaseException) -> bool:
    """True when Python would print no "during handling of the above exception" chain."""
    return error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def random_array(rng: np.random.Generator, dtype, shape) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


# -- IDX round trip ------------------------------------------------------------------------


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(dtype=st.sampled_from(IDX_DTYPES), shape=shapes(min_dims=1, max_dims=4, max_side=6),
       seed=seeds, gz=st.booleans())
def test_idx_round_trip(tmp_path, dtype, shape, seed, gz):
    array = random_array(np.random.default_rng(seed), dtype, shape)
    path = tmp_path / ("array.idx.gz" if gz else "array.idx")
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == shape
    np.testing.assert_array_equal(back, array)
    assert path.read_bytes()[:2] == (b"\x1f\x8b" if gz else b"\0\0")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_write_idx_uses_the_mnist_magic_numbers(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 1], dtype=np.uint8)
    write_idx(tmp_path / "images", images)
    write_idx(tmp_path / "labels", labels)
    assert (tmp_path / "images").read_bytes() == (2051).to_bytes(4, "big") + bytes((0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4)) + images.tobytes()
    assert (tmp_path / "labels").read_bytes()[:8] == (2049).to_bytes(4, "big") + (2).to_bytes(4, "big")


def test_write_idx_writes_big_endian_whatever_the_input_byte_order(tmp_path):
    array = np.array([[1, -2], [300, 70000]], dtype="<i4")
    write_idx(tmp_path / "a", array)
    write_idx(tmp_path / "b", array.astype(">i4"))
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    assert (tmp_path / "a").read_bytes()[12:16] == (1).to_bytes(4, "big")
    np.testing.assert_array_equal(read_idx(tmp_path / "b"), array)


def test_write_idx_is_deterministic_and_replaces_atomically(tmp_path, monkeypatch):
    path = tmp_path / "labels.gz"
    write_idx(path, np.zeros(5, dtype=np.uint8))
    first = path.read_bytes()
    write_idx(path, np.zeros(5, dtype=np.uint8))
    assert path.read_bytes() == first  # gzip mtime fixed: the same array gives the same bytes

    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(data.os, "replace", lambda src, dst: (replaced.append((Path(src), Path(dst))), real_replace(src, dst)))
    write_idx(path, np.ones(3, dtype=np.uint8))
    [(source, destination)] = replaced
    assert source.parent == destination.parent == tmp_path and destination == path
    np.testing.assert_array_equal(read_idx(path), [1, 1, 1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.gz"]


@pytest.mark.parametrize("array, error", [
    (np.zeros(3, dtype=np.int64), TypeError),
    (np.zeros(3, dtype=bool), TypeError),
    (np.zeros(3, dtype=np.float16), TypeError),
    (np.array(5, dtype=np.uint8), ValueError),
    ([1, 2, 3], TypeError),
])
def test_write_idx_refuses_what_idx_cannot_hold(tmp_path, array, error):
    with pytest.raises(error, match="write_idx"):
        write_idx(tmp_path / "x", array)
    assert list(tmp_path.iterdir()) == []


# -- malformed IDX files -------------------------------------------------------------------

GOOD_PAYLOAD = bytes(range(6))


@pytest.mark.parametrize("content, message", [
    (b"", "too short for an IDX header"),
    (b"\0\0\x08", "too short for an IDX header"),
    (b"\x01\0\x08\x01" + bytes(4), "not an IDX file"),
    (b"\0\x01\x08\x01" + bytes(4), "not an IDX file"),
    (b"<html>Not Found</html>", "not an IDX file"),
    (idx_bytes(0x07, (6,), GOOD_PAYLOAD), "unknown IDX type code 0x07"),
    (idx_bytes(0x0A, (6,), GOOD_PAYLOAD), "unknown IDX type code 0x0A"),
    (b"\0\0\x08\0", "0 dimensions"),
    (idx_bytes(0x08, (2, 3), GOOD_PAYLOAD)[:9], "truncated IDX header"),
    (b"\0\0\x08\x03" + bytes(8), "truncated IDX header"),
    (idx_bytes(0x08, (2, 3), GOOD_PAYLOAD[:5]), "truncated IDX payload"),
    (idx_bytes(0x0C, (2, 3), GOOD_PAYLOAD), "truncated IDX payload"),
    (idx_bytes(0x08, (2, 3), GOOD_PAYLOAD + b"\0"), "1 unexpected trailing bytes"),
    (idx_bytes(0x08, (2,), GOOD_PAYLOAD), "4 unexpected trailing bytes"),
])
@pytest.mark.parametrize("gz", [False, True])
def test_malformed_idx_is_a_data_error_naming_the_file(tmp_path, content, message, gz):
    path = tmp_path / ("bad.gz" if gz else "bad")
    path.write_bytes(gzip.compress(content) if gz else content)
    with pytest.raises(DataError, match=message) as caught:
        read_idx(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_well_formed_hand_built_idx_reads(tmp_path):
    (tmp_path / "ok").write_bytes(idx_bytes(0x08, (2, 3), GOOD_PAYLOAD))
    np.testing.assert_array_equal(read_idx(tmp_path / "ok"), np.arange(6).reshape(2, 3))


@pytest.mark.parametrize("damage", ["truncated", "flipped", "tail"])
def test_corrupt_gzip_is_a_data_error(tmp_path, damage):
    stream = bytearray(gzip.compress(idx_bytes(0x08, (64,), bytes(range(64)) * 1)))
    if damage == "truncated":
        stream = stream[: len(stream) - 10]
    elif damage == "flipped":
        stream[-6] ^= 0xFF  # inside the CRC/size trailer
    else:
        stream = stream[:12] + bytes(8) + stream[20:]  # inside the deflate data
    path = tmp_path / "x.gz"
    path.write_bytes(bytes(stream))
    with pytest.raises(DataError, match="corrupt or truncated gzip") as caught:
        read_idx(path)
    assert str(path) in str(caught.value)
    assert unchained(caught.value)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "nope.gz")


# -- a small fake MNIST-format dataset -----------------------------------------------------


def fake_arrays(train=12, test=5, side=4, max_label=9, test_labels=None):
    rng = np.random.default_rng(0)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (train, side, side), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, max_label + 1, train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (test, side, side), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (rng.integers(0, 10, test, dtype=np.uint8)
                                   if test_labels is None else test_labels),
    }


def write_fake(directory: Path, arrays=None, gz=True) -> dict[str, bytes]:
    """Write the four files into ``directory``; returns each stem's file bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for stem, array in (arrays or fake_arrays()).items():
        path = directory / (f"{stem}.gz" if gz else stem)
        write_idx(path, array)
        written[stem] = path.read_bytes()
    return written


def trust(monkeypatch, name, gz=None, raw=None):
    """Patch the checksum tables of ``name`` to the given ``stem -> bytes`` files."""
    monkeypatch.setitem(data._GZ_MD5, name, {stem: md5(b) for stem, b in (gz or {}).items()}
                        or {stem: "0" * 32 for stem in IDX_FILES})
    monkeypatch.setitem(data._RAW_MD5, name, {stem: md5(b) for stem, b in (raw or {}).items()})


@pytest.fixture
def no_proxy(monkeypatch):
    """urllib would send 127.0.0.1 through a proxy taken from the environment."""
    for key in list(os.environ):
        if key.lower().endswith("_proxy"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("no_proxy", "*")


@pytest.fixture
def mirror(tmp_path, no_proxy, monkeypatch):
    """A local HTTP server over tmp_path/served; ``.requests`` lists the paths asked for."""
    served = tmp_path / "served"
    served.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)  # fast shutdown
    thread.start()
    server.directory, server.requests = served, requests
    server.url = f"http://127.0.0.1:{server.server_address[1]}/"
    monkeypatch.setitem(data._MIRRORS, "mnist", (server.url,))
    yield server
    server.shutdown()
    server.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


# -- loading from a data dir ---------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_fake_dataset_loads_from_data_dir_and_nothing_is_written_there(tmp_path, monkeypatch, gz):
    arrays = fake_arrays()
    files = write_fake(tmp_path / "dir", arrays, gz=gz)
    contents = {stem: gzip.decompress(b) if gz else b for stem, b in files.items()}
    # gz: trust the published-.gz checksums; raw: only the content checksums can match.
    trust(monkeypatch, "mnist", gz=files if gz else None, raw=None if gz else contents)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "dir").iterdir())
    dataset = load_dataset("mnist", data_dir=tmp_path / "dir", cache_dir=tmp_path / "cache")
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "dir").iterdir()) == before
    assert not (tmp_path / "cache").exists()
    assert dataset.image_shape == (1, 4, 4)
    assert dataset.train_images.shape == (12, 1, 4, 4) and dataset.test_images.shape == (5, 1, 4, 4)
    assert dataset.train_images.dtype == np.float32 and dataset.train_labels.dtype == np.int64
    np.testing.assert_array_equal(dataset.train_images[:, 0] * 255, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(dataset.test_labels, arrays["t10k-labels-idx1-ubyte"])


def test_regzipped_file_loads_by_its_content_checksum(tmp_path, monkeypatch):
    files = write_fake(tmp_path / "dir")
    published = {stem: gzip.compress(gzip.decompress(b), compresslevel=1) for stem, b in files.items()}
    assert all(published[s] != files[s] for s in IDX_FILES)
    trust(monkeypatch, "mnist", gz=published, raw={s: gzip.decompress(b) for s, b in files.items()})
    assert load_dataset("mnist", data_dir=tmp_path / "dir").train_images.shape == (12, 1, 4, 4)


def test_checksum_mismatch_for_a_valid_idx_file_that_is_not_mnist(tmp_path):
    write_fake(tmp_path / "dir")  # valid IDX, real (unpatched) MNIST checksums
    with pytest.raises(DataError, match="checksum mismatch") as caught:
        load_dataset("mnist", data_dir=tmp_path / "dir")
    message = str(caught.value)
    assert "train-images-idx3-ubyte.gz" in message and "\n" not in message
    assert "f68b3c2dcbeaaa9fbdd348bbdeb94873" in message and "6bbc9ace898e44ae57da46a324031adb" in message


def test_kmnist_without_the_published_gz_asks_for_it(tmp_path):
    write_fake(tmp_path / "dir", gz=False)
    with pytest.raises(DataError, match="checksum mismatch") as caught:
        load_dataset("kmnist", data_dir=tmp_path / "dir")
    assert "no checksum of the uncompressed file is published" in str(caught.value)
    assert "bdb82020997e1d708af4cf47b453dcf7" in str(caught.value)


def test_data_dir_missing_files_are_named_and_nothing_is_downloaded(tmp_path, monkeypatch):
    monkeypatch.setitem(data._MIRRORS, "mnist", (closed_port_url(),))
    files = write_fake(tmp_path / "dir")
    (tmp_path / "dir" / "train-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "dir" / "t10k-images-idx3-ubyte.gz").unlink()
    trust(monkeypatch, "mnist", gz=files)
    with pytest.raises(DataError, match="lacks train-labels-idx1-ubyte, t10k-images-idx3-ubyte") as caught:
        load_dataset("mnist", data_dir=tmp_path / "dir", cache_dir=tmp_path / "cache")
    assert str(tmp_path / "dir") in str(caught.value) and "download" not in str(caught.value)
    assert not (tmp_path / "cache").exists()


def test_data_dir_that_is_not_a_directory(tmp_path):
    with pytest.raises(DataError, match="is not a directory"):
        load_dataset("mnist", data_dir=tmp_path / "nowhere")


@pytest.mark.parametrize("arrays, message", [
    (fake_arrays(max_label=12), "labels must be 0..9"),
    (fake_arrays(test_labels=np.zeros(4, dtype=np.uint8)), "4 labels but t10k-images-idx3-ubyte.gz has 5 images"),
    ({**fake_arrays(), "train-images-idx3-ubyte": np.zeros((12, 16), np.uint8)}, "expected IDX images .magic 2051"),
    ({**fake_arrays(), "train-labels-idx1-ubyte": np.zeros(12, np.int32)}, "expected IDX labels .magic 2049"),
    ({**fake_arrays(), "t10k-images-idx3-ubyte": np.zeros((5, 3, 3), np.uint8)}, "train images are"),
    (fake_arrays(train=0), "at least one image"),
])
def test_inconsistent_idx_files_are_refused(tmp_path, monkeypatch, arrays, message):
    files = write_fake(tmp_path / "dir", arrays)
    trust(monkeypatch, "mnist", gz=files)
    with pytest.raises(DataError, match=message):
        load_dataset("mnist", data_dir=tmp_path / "dir")


def test_real_mnist_loads_from_the_shared_data_dir():
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found at {MNIST_DIR} (set MNIST_DIR to the folder of the IDX .gz files)")
    dataset = load_dataset("mnist", data_dir=MNIST_DIR)
    assert dataset.train_images.shape == (60000, 1, 28, 28) and dataset.test_images.shape == (10000, 1, 28, 28)
    assert dataset.train_images.dtype == dataset.test_images.dtype == np.float32
    assert dataset.train_labels.shape == (60000,) and dataset.test_labels.shape == (10000,)
    for images in (dataset.train_images, dataset.test_images):
        assert images.min() == 0.0 and images.max() == 1.0
    for labels in (dataset.train_labels, dataset.test_labels):
        assert labels.dtype == np.int64 and set(np.unique(labels)) == set(range(10))
    assert dataset.train_labels[:5].tolist() == [5, 0, 4, 1, 9]


# -- the cache and downloads ---------------------------------------------------------------


def test_download_is_verified_cached_atomically_and_reused(tmp_path, mirror, monkeypatch):
    files = write_fake(mirror.directory)
    trust(monkeypatch, "mnist", gz=files)
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(data.os, "replace", lambda src, dst: (replaced.append((Path(src), Path(dst))), real_replace(src, dst)))

    first = load_dataset("mnist", cache_dir=tmp_path / "cache")
    cache = tmp_path / "cache" / "mnist"
    assert sorted(mirror.requests) == sorted(f"/{stem}.gz" for stem in IDX_FILES)
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{stem}.gz" for stem in IDX_FILES)
    assert all((cache / f"{stem}.gz").read_bytes() == files[stem] for stem in IDX_FILES)
    assert sorted(dst for _, dst in replaced) == sorted(cache / f"{stem}.gz" for stem in IDX_FILES)
    assert all(src.parent == cache and src.name.endswith(".tmp") for src, _ in replaced)

    second = load_dataset("mnist", cache_dir=tmp_path / "cache", download=False)
    third = load_dataset("mnist", cache_dir=tmp_path / "cache")
    assert len(mirror.requests) == 4  # served from the cache, no second download
    for loaded in (second, third):
        np.testing.assert_array_equal(loaded.train_images, first.train_images)
        np.testing.assert_array_equal(loaded.test_labels, first.test_labels)


def test_download_with_a_wrong_checksum_caches_nothing(tmp_path, mirror, monkeypatch):
    files = write_fake(mirror.directory)
    trust(monkeypatch, "mnist", gz={**files, "train-images-idx3-ubyte": b"something else"})
    with pytest.raises(DataError, match="checksum mismatch for downloaded train-images-idx3-ubyte.gz") as caught:
        load_dataset("mnist", cache_dir=tmp_path / "cache")
    assert "nothing was cached" in str(caught.value) and "\n" not in str(caught.value)
    cache = tmp_path / "cache" / "mnist"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_a_corrupted_cache_file_is_refused_with_a_hint(tmp_path, mirror, monkeypatch):
    files = write_fake(mirror.directory)
    trust(monkeypatch, "mnist", gz=files)
    cache = tmp_path / "cache" / "mnist"
    write_fake(cache, fake_arrays(train=3))
    with pytest.raises(DataError, match="checksum mismatch.*delete it to download it again"):
        load_dataset("mnist", cache_dir=tmp_path / "cache")
    assert mirror.requests == []


def test_download_shows_a_progress_bar_only_on_a_terminal(tmp_path, mirror, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    files = write_fake(mirror.directory)
    trust(monkeypatch, "mnist", gz=files)
    monkeypatch.setattr(sys, "stderr", Terminal())
    load_dataset("mnist", cache_dir=tmp_path / "cache")
    assert "mnist train-images-idx3-ubyte.gz" in sys.stderr.getvalue()


def test_no_network_gives_one_line_naming_data_dir_and_digits(tmp_path, monkeypatch, no_proxy):
    monkeypatch.setitem(data._MIRRORS, "mnist", (closed_port_url(),))
    with pytest.raises(DataError) as caught:
        load_dataset("mnist", cache_dir=tmp_path / "cache")
    message = str(caught.value)
    assert message.startswith("mnist: could not download train-images-idx3-ubyte.gz (")
    assert "--data-dir" in message and "'digits'" in message and "\n" not in message
    assert unchained(caught.value)
    assert not (tmp_path / "cache" / "mnist").exists()


def test_http_error_is_reported_like_no_network(tmp_path, mirror, monkeypatch):
    trust(monkeypatch, "mnist")
    with pytest.raises(DataError, match=r"HTTP 404.*--data-dir.*'digits'"):
        load_dataset("mnist", cache_dir=tmp_path / "cache")


def test_download_false_never_touches_the_network(tmp_path, mirror):
    with pytest.raises(DataError, match="not in the cache .* and download=False.*--data-dir.*'digits'"):
        load_dataset("mnist", cache_dir=tmp_path / "cache", download=False)
    assert mirror.requests == []


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOENCODERS_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("AUTOENCODERS_CACHE")
    assert default_cache_dir() == tmp_path / "xdg" / "autoencoders"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "autoencoders"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "autoencoders"


# -- the offline default -------------------------------------------------------------------


def test_digits_load_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOENCODERS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(data._MIRRORS, "mnist", ())  # any download attempt would fail loudly
    dataset = load_dataset()
    assert dataset.name == OFFLINE_DEFAULT == DATASET_NAMES[0] == "digits"
    assert dataset.image_shape == (1, 8, 8)
    assert dataset.train_images.shape == (1500, 1, 8, 8) and dataset.test_images.shape == (297, 1, 8, 8)
    for images in (dataset.train_images, dataset.test_images):
        assert images.dtype == np.float32 and images.min() == 0.0 and images.max() == 1.0
    for labels in (dataset.train_labels, dataset.test_labels):
        assert labels.dtype == np.int64 and set(np.unique(labels)) == set(range(10))
    assert np.bincount(dataset.test_labels).min() >= 25  # the tail split has every digit
    again = load_dataset("digits")
    np.testing.assert_array_equal(again.test_images, dataset.test_images)
    assert not (tmp_path / "cache").exists()


def test_digits_refuses_a_data_dir(tmp_path):
    with pytest.raises(DataError, match="takes no --data-dir"):
        load_dataset("digits", data_dir=tmp_path)


def test_unknown_dataset_name():
    with pytest.raises(DataError, match="unknown dataset 'cifar'.*digits, mnist, fashion-mnist, kmnist"):
        load_dataset("cifar")


def test_dataset_checks_its_arrays_and_has_a_short_repr():
    images, labels = np.zeros((3, 1, 2, 2), np.float32), np.zeros(3, np.int64)
    dataset = Dataset("digits", images, labels, images[:1], labels[:1])
    assert repr(dataset) == "Dataset(name='digits', train=3, test=1, image_shape=(1, 2, 2))"
    with pytest.raises(ValueError, match="train_images must be a float32"):
        Dataset("digits", images.astype(np.float64), labels, images, labels)
    with pytest.raises(ValueError, match="2 test images but 3 labels"):
        Dataset("digits", images, labels, images[:2], labels)


def test_importing_the_module_is_cheap():
    code = ("import sys, autoencoders.data; heavy = {'sklearn', 'tqdm', 'torch', 'urllib.request'} & set(sys.modules);"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# -- binarization --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binarize_threshold_is_exact(dtype):
    images = np.array([[0.0, 0.5, 0.5000001, 1.0], [0.49, 0.51, 0.2, 0.9]], dtype=dtype)
    out = binarize(images, "threshold")
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, [[0, 0, 1, 1], [0, 1, 0, 1]])


def test_binarize_grey_is_unchanged():
    images = np.random.default_rng(0).random((2, 1, 3, 3)).astype(np.float32)
    assert binarize(images, "grey") is images


@given(seed=seeds, dtype=st.sampled_from([np.float32, np.float64]))
def test_binarize_dynamic_is_reproducible_and_unbiased(seed, dtype):
    p = np.float64(np.random.default_rng(seed).uniform(0.05, 0.95))
    images = np.full((20_000,), p, dtype=dtype)
    first = binarize(images, "dynamic", np.random.default_rng(seed))
    assert first.dtype == dtype and set(np.unique(first)) <= {0, 1}
    np.testing.assert_array_equal(first, binarize(images, "dynamic", np.random.default_rng(seed)))
    assert not np.array_equal(first, binarize(images, "dynamic", np.random.default_rng(seed + 1)))
    # the sample mean is within 6 standard errors of p
    assert abs(first.mean() - p) < 6 * np.sqrt(p * (1 - p) / images.size)


def test_binarize_dynamic_keeps_zeros_and_ones():
    images = np.array([0.0, 1.0] * 50)
    np.testing.assert_array_equal(binarize(images, "dynamic", np.random.default_rng(1)), images)


def test_binarize_refuses_bad_arguments():
    images = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match="mode must be one of grey, threshold, dynamic, got 'otsu'"):
        binarize(images, "otsu")
    with pytest.raises(ValueError, match="'dynamic' needs rng"):
        binarize(images, "dynamic")
    with pytest.raises(TypeError, match="np.random.Generator"):
        binarize(images, "dynamic", np.random.RandomState(0))
    assert BINARIZATION_MODES == ("grey", "threshold", "dynamic")
