"""Philox-4x32-10, the counter-based RNG that every backend draws dropout masks from.

This numpy version is the reference: the LLVM and CUDA backends reimplement `uniform` bit for bit,
so a mask is identical whichever backend draws it.
"""
from __future__ import annotations

import numpy as np

# Random123's Philox4x32 constants: round multipliers and the Weyl sequence that bumps the key.
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
ROUNDS = 10

_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
# Elements per block in `uniform`: big enough to amortise numpy call overhead, small enough
# that the live uint64 temporaries stay in L2 (measured best of 2**12..2**17 here).
_BLOCK = 1 << 16


def _philox_u64(c0, c1, c2, c3, k0, k1):
    """Ten rounds on uint64 arrays (or scalars) holding 32-bit values; the products need 64 bits."""
    m0, m1 = np.uint64(PHILOX_M0), np.uint64(PHILOX_M1)
    for r in range(ROUNDS):
        if r:  # the key is bumped before every round but the first
            k0 = (k0 + np.uint64(PHILOX_W0)) & _MASK32
            k1 = (k1 + np.uint64(PHILOX_W1)) & _MASK32
        p0, p1 = c0 * m0, c2 * m1
        c0, c1, c2, c3 = ((p1 >> _SHIFT32) ^ c1 ^ k0, p1 & _MASK32,
                          (p0 >> _SHIFT32) ^ c3 ^ k1, p0 & _MASK32)
    return c0, c1, c2, c3


def philox4x32_10(ctr0, ctr1, ctr2, ctr3, key0, key1):
    """Random123 Philox4x32 with 10 rounds; uint32 arrays (broadcastable) in, four uint32 out.

    >>> [hex(int(w)) for w in philox4x32_10(*np.zeros(6, np.uint32))]
    ['0x6627e8d5', '0xe169c58d', '0xbc57ac4c', '0x9b00dbd8']
    """
    args = [np.asarray(v, dtype=np.uint32).astype(np.uint64)
            for v in (ctr0, ctr1, ctr2, ctr3, key0, key1)]
    out = np.broadcast_arrays(*_philox_u64(*args))
    return tuple(np.asarray(w, dtype=np.uint32) for w in out)


def _seed_key(seed: int) -> tuple[np.uint64, np.uint64]:
    bits = int(seed) & 0xFFFFFFFFFFFFFFFF  # two's complement of a signed int64
    return np.uint64(bits & 0xFFFFFFFF), np.uint64(bits >> 32)


def _check_dtype(dtype) -> np.dtype:
    dt = np.dtype(getattr(dtype, "np", dtype))  # numpy dtype-likes and nnjit DTypes
    if dt not in (np.float32, np.float64):
        raise TypeError(f"philox uniform: dtype must be float32 or float64, not {dt.name}")
    return dt


def _to_float(w0, w1, dt: np.dtype, out=None):
    """The exact word-to-float conversions documented in `uniform`."""
    if dt == np.float32:
        return np.multiply((w0 >> np.uint64(8)).astype(np.float32), np.float32(2.0**-24), out=out)
    bits = (w0 << np.uint64(21)) ^ (w1 >> np.uint64(11))
    return np.multiply(bits.astype(np.float64), 2.0**-53, out=out)


def uniform(seed: int, shape: tuple, salt: int, dtype=np.float32) -> np.ndarray:
    """Uniform [0, 1) numbers from Philox-4x32-10, one counter per element.

    Element i (row-major flat index) uses
        counter = (i & 0xffffffff, i >> 32, salt & 0xffffffff, 0)
        key     = (seed & 0xffffffff, (seed >> 32) & 0xffffffff)   # seed as int64 bits
    and (w0, w1, w2, w3) = philox4x32_10(counter, key) becomes
        float32: float32(w0 >> 8) * 2**-24                                  (24 bits)
        float64: float64(((uint64(w0) << 21) ^ (uint64(w1) >> 11))) * 2**-53  (53 bits)
    Both conversions and products are exact, so any backend can reproduce the bits.

    >>> uniform(0, (3,), salt=1).dtype, bool(uniform(7, (4, 5), 3).max() < 1.0)
    (dtype('float32'), True)
    """
    dt = _check_dtype(dtype)
    shape = tuple(int(d) for d in shape)
    n = int(np.prod(shape, dtype=np.int64))
    out = np.empty(n, dtype=dt)
    k0, k1 = _seed_key(seed)
    c2, zero = np.uint64(int(salt) & 0xFFFFFFFF), np.uint64(0)
    for start in range(0, n, _BLOCK):
        stop = min(n, start + _BLOCK)
        # A block never straddles a multiple of 2**32 (_BLOCK divides it), so ctr1 is a scalar.
        base = start & 0xFFFFFFFF
        c0 = np.arange(base, base + (stop - start), dtype=np.uint64)
        w0, w1, _, _ = _philox_u64(c0, np.uint64(start >> 32), c2, zero, k0, k1)
        _to_float(w0, w1, dt, out=out[start:stop])
    return out.reshape(shape)


def uniform_at(seed: int, index, salt: int, dtype=np.float32) -> np.ndarray:
    """The values `uniform` gives the elements at flat indices `index` (non-negative ints).

    >>> bool(uniform_at(9, [4], 2)[0] == uniform(9, (8,), 2)[4])
    True
    """
    dt = _check_dtype(dtype)
    idx = np.asarray(index, dtype=np.int64).astype(np.uint64)
    k0, k1 = _seed_key(seed)
    w0, w1, _, _ = _philox_u64(idx & _MASK32, idx >> _SHIFT32,
                               np.uint64(int(salt) & 0xFFFFFFFF), np.uint64(0), k0, k1)
    return np.asarray(_to_float(np.asarray(w0), np.asarray(w1), dt)).reshape(idx.shape)
