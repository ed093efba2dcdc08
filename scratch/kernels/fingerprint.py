"""Numba kernels that fingerprint a buffer (in-place edit detection), beside NumPy references.

``fingerprint_bytes(raw) -> uint64``: a 64-bit hash of every byte of ``raw``, a flat uint8 array
(``scratch.nn.inplace`` passes each array it watches as its bytes; nothing here knows about
dtypes or layers). The ``nbytes`` bytes are read as ``m = nbytes // 8`` 64-bit words (native
byte order; a buffer not on an 8-byte boundary is copied to one first) and the last
``nbytes % 8`` bytes, zero-padded little-endian into one more word ``tail`` (0 when there are
none); ``fingerprint_words(words, tail, nbytes)`` hashes those.

The hash is xxHash64's round, merge and avalanche spread over 64 lanes:

- lane j starts at (j + 1)·P5; word i goes to lane j = i mod 64:
  acc[j] ← rotl(acc[j] + w[i]·P2, 31)·P1 (all arithmetic mod 2⁶⁴);
- h = P5 + nbytes; then for each lane in order h ← (h ^ round(acc[j]))·P1 + P4, and likewise for
  ``tail``, with round(v) = rotl(v·P2, 31)·P1; then the avalanche
  h ^= h >> 33; h *= P2; h ^= h >> 29; h *= P3; h ^= h >> 32.

Why it catches any edit: for a fixed lane state the round is a bijection of the word (odd
multipliers, a rotation, an addition), and every later round and merge step is a bijection of the
state, so changing any *one* word (or the tail) always changes the hash; changes to several words
collide with probability about 2⁻⁶⁴. The 64 independent lanes are what make it fast: the inner
loop over a block of 64 words is vectorized by LLVM (eight 512-bit vectors of lanes in flight on
AVX-512), about 6.5 µs for a 128x784 float32 batch (401 KB) on the project's 2-core EPYC, close to
a plain copy of it (9 µs); a single xxHash64 stream (4 lanes) took 32 µs. From memory rather
than cache it takes about 30 µs, what any read of 401 KB takes there. Serial, like every kernel
here (see ``scratch.kernels.activations``); cached on disk.
"""

from __future__ import annotations

import numpy as np
from numba import njit

LANES = 64

# xxHash64's primes
P1 = np.uint64(0x9E3779B185EBCA87)
P2 = np.uint64(0xC2B2AE3D27D4EB4F)
P3 = np.uint64(0x165667B19E3779F9)
P4 = np.uint64(0x85EBCA77C2B2AE63)
P5 = np.uint64(0x27D4EB2F165667C5)
_R31, _R33 = np.uint64(31), np.uint64(33)
_S29, _S32 = np.uint64(29), np.uint64(32)


@njit(cache=True)
def _merge(h, value):
    """h ← (h ^ round(value))·P1 + P4, round(v) = rotl(v·P2, 31)·P1: xxHash64's merge step."""
    v = value * P2
    v = ((v << _R31) | (v >> _R33)) * P1
    return (h ^ v) * P1 + P4


@njit(cache=True)
def fingerprint_words(words, tail, nbytes):
    """64-bit hash of a buffer: ``words`` (m,) uint64, ``tail`` a uint64, ``nbytes`` its length.

    Loop nest: blocks of 64 words outside, the 64 lanes inside (contiguous, vectorized); the
    m mod 64 words left over go to lanes 0.. in one more partial pass; then 65 merges.
    """
    acc = np.empty(LANES, dtype=np.uint64)
    for j in range(LANES):
        acc[j] = P5 * np.uint64(j + 1)
    blocks = words.shape[0] // LANES
    for b in range(blocks):
        row = words[b * LANES:(b + 1) * LANES]
        for j in range(LANES):
            a = acc[j] + row[j] * P2
            acc[j] = ((a << _R31) | (a >> _R33)) * P1
    rest = words[blocks * LANES:]
    for j in range(rest.shape[0]):
        a = acc[j] + rest[j] * P2
        acc[j] = ((a << _R31) | (a >> _R33)) * P1
    h = P5 + np.uint64(nbytes)
    for j in range(LANES):
        h = _merge(h, acc[j])
    h = _merge(h, np.uint64(tail))
    h ^= h >> _R33
    h *= P2
    h ^= h >> _S29
    h *= P3
    h ^= h >> _S32
    return h


@njit(cache=True)
def fingerprint_bytes(raw):
    """``fingerprint_words`` of the bytes of ``raw`` (flat, contiguous uint8), split into words and tail."""
    nbytes = raw.shape[0]
    full = nbytes - nbytes % 8
    body = raw[:full]
    if raw.ctypes.data % 8 != 0:  # the words must be 8-byte aligned: hash an aligned copy
        body = np.empty(full, dtype=np.uint8)
        body[:] = raw[:full]
    tail = np.uint64(0)
    for k in range(nbytes - full):
        tail |= np.uint64(raw[full + k]) << np.uint64(8 * k)
    return fingerprint_words(body.view(np.uint64), tail, nbytes)


@njit(cache=True)
def buffer_address(array):
    """The address of ``array``'s first byte (a key for its buffer; 0.3 µs against NumPy's 2 µs
    ``__array_interface__``)."""
    return array.ctypes.data


# ---------------------------------------------------------------------------- references


def buffer_address_reference(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]

_MASK = (1 << 64) - 1


def _rotl_reference(a: np.ndarray, bits: int) -> np.ndarray:
    return (a << np.uint64(bits)) | (a >> np.uint64(64 - bits))


def _merge_reference(h: int, value: int) -> int:
    v = (value * int(P2)) & _MASK
    v = (((v << 31) | (v >> 33)) & _MASK) * int(P1) & _MASK
    return ((h ^ v) * int(P1) + int(P4)) & _MASK


def fingerprint_words_reference(words: np.ndarray, tail: int, nbytes: int) -> int:
    """``fingerprint_words`` with whole-lane NumPy operations (uint64 arrays wrap mod 2⁶⁴) and
    the merges in Python integers."""
    acc = np.arange(1, LANES + 1, dtype=np.uint64) * P5
    full = words.size // LANES * LANES
    for row in words[:full].reshape(-1, LANES):
        acc = _rotl_reference(acc + row * P2, 31) * P1
    rest = words[full:]
    acc[:rest.size] = _rotl_reference(acc[:rest.size] + rest * P2, 31) * P1
    h = (int(P5) + int(nbytes)) & _MASK
    for value in acc.tolist():
        h = _merge_reference(h, value)
    h = _merge_reference(h, int(tail))
    h ^= h >> 33
    h = h * int(P2) & _MASK
    h ^= h >> 29
    h = h * int(P3) & _MASK
    h ^= h >> 32
    return h


def fingerprint_bytes_reference(data: bytes) -> int:
    """``fingerprint_bytes`` of a byte string: the words by ``np.frombuffer``, the tail by ``int.from_bytes``."""
    full = len(data) // 8 * 8
    words = np.frombuffer(data[:full], dtype=np.uint64)
    tail = int.from_bytes(data[full:], "little")
    return fingerprint_words_reference(words, tail, len(data))
