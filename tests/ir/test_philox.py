"""Philox-4x32-10: Random123 known answers, determinism and the statistics of `uniform`."""
import numpy as np
import pytest

from nnjit.ir.philox import philox4x32_10, uniform, uniform_at

M = 0xFFFFFFFF
# Random123 kat_vectors for philox4x32_10: (counter, key) -> output.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((M, M, M, M), (M, M), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_known_answers(ctr, key, expected):
    out = philox4x32_10(*[np.uint32(c) for c in ctr], *[np.uint32(k) for k in key])
    assert all(w.dtype == np.uint32 for w in out)
    assert tuple(int(w) for w in out) == expected


def test_known_answers_broadcast():
    ctr = np.array([[c[i] for c in (k[0] for k in KAT)] for i in range(4)], dtype=np.uint32)
    key = np.array([[k[1][i] for k in KAT] for i in range(2)], dtype=np.uint32)
    out = np.stack(philox4x32_10(*ctr, *key), axis=1)
    assert out.tolist() == [list(k[2]) for k in KAT]
    # A scalar key broadcasts against a vector of counters.
    w = philox4x32_10(np.zeros(3, np.uint32), 0, 0, 0, 0, 0)
    assert [int(x) for x in w[0]] == [0x6627E8D5] * 3


def _reference_words(seed, salt, n):
    """The counter/key layout of `uniform`, spelled out with `philox4x32_10`."""
    i = np.arange(n, dtype=np.uint64)
    bits = seed & 0xFFFFFFFFFFFFFFFF
    return philox4x32_10((i & M).astype(np.uint32), (i >> np.uint64(32)).astype(np.uint32),
                         np.uint32(salt & M), np.uint32(0), np.uint32(bits & M),
                         np.uint32(bits >> 32))


@pytest.mark.parametrize("seed,salt", [(0, 0), (1234, 7), (-1, 3), (-(2**63), 2**32 + 5)])
def test_uniform_matches_layout(seed, salt):
    w0, w1, _, _ = _reference_words(seed, salt, 3000)
    f32 = (w0 >> 8).astype(np.float32) * np.float32(2.0**-24)
    f64 = ((w0.astype(np.uint64) << np.uint64(21)) ^ (w1.astype(np.uint64) >> np.uint64(11)))
    f64 = f64.astype(np.float64) * 2.0**-53
    np.testing.assert_array_equal(uniform(seed, (3000,), salt, np.float32), f32)
    np.testing.assert_array_equal(uniform(seed, (30, 100), salt, np.float64), f64.reshape(30, 100))


def test_uniform_at_matches_uniform_and_high_counter_word():
    u = uniform(-77, (200_000,), 9, np.float64)  # several blocks
    idx = np.array([0, 1, 65535, 65536, 131071, 199_999])
    np.testing.assert_array_equal(uniform_at(-77, idx, 9, np.float64), u[idx])
    # Indices past 2**32 put their high half in counter word 1.
    i = 2**32 * 3 + 17
    w0 = philox4x32_10(np.uint32(17), np.uint32(3), np.uint32(9), np.uint32(0),
                       np.uint32((-77) & M), np.uint32(((-77) & 0xFFFFFFFFFFFFFFFF) >> 32))[0]
    assert uniform_at(-77, i, 9) == np.float32(int(w0) >> 8) * np.float32(2.0**-24)
    assert uniform_at(-77, [[i]], 9).shape == (1, 1)


def test_determinism():
    a = uniform(42, (64, 33), salt=5)
    np.testing.assert_array_equal(a, uniform(42, (64, 33), salt=5))
    assert a.shape == (64, 33) and a.dtype == np.float32
    assert not np.array_equal(a, uniform(42, (64, 33), salt=6))
    assert not np.array_equal(a, uniform(43, (64, 33), salt=5))
    assert not np.array_equal(a, uniform(42 + 2**32, (64, 33), salt=5))  # high key word counts
    assert not np.array_equal(a, uniform(42, (64, 33), salt=5 + 2**31))
    # Shape only fixes the count: element i is the same whatever the shape.
    np.testing.assert_array_equal(a.ravel(), uniform(42, (64 * 33,), salt=5))
    assert uniform(1, (0, 3), 0).shape == (0, 3) and uniform(1, (), 0).shape == ()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uniformity(dtype):
    n = 1 << 20
    u = uniform(20240601, (n,), salt=11, dtype=dtype)
    assert u.dtype == dtype and u.min() >= 0.0 and u.max() < 1.0
    # Mean 1/2, variance 1/12: standard errors sqrt(1/12n) and sqrt(1/180n); allow 5 sigma.
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / n)
    assert abs(u.var() - 1 / 12) < 5 * np.sqrt(1 / 180 / n)
    # Chi-square over 256 bins (255 dof: mean 255, sd ~22.6); 5 sigma above is ~368.
    counts = np.bincount((u * 256).astype(np.int64), minlength=256)
    expected = n / 256
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert 150 < chi2 < 368, chi2
    # Neighbouring elements are uncorrelated.
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 5 / np.sqrt(n)


def test_float64_uses_53_bits():
    u = uniform(3, (1 << 16,), salt=2, dtype=np.float64)
    scaled = u * 2.0**53
    assert np.all(scaled == np.floor(scaled))
    # Low bits are populated: far more distinct values than a float32 grid could give.
    assert np.any((scaled % 2**29) != 0)


def test_vectorized_for_big_masks():
    """Vectorized, not a Python loop per element: 4M float32 take a bounded number of Python
    calls (counted, not timed: unit tests carry no wall-clock limits)."""
    import sys
    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        calls += event == "call"
    sys.setprofile(count)
    try:
        u = uniform(1, (2048, 2048), salt=3)
    finally:
        sys.setprofile(None)
    assert u.shape == (2048, 2048) and calls < 1000, calls


def test_nnjit_dtype():
    from nnjit.ir.types import DType
    np.testing.assert_array_equal(uniform(4, (9,), 1, DType.F64), uniform(4, (9,), 1, np.float64))


def test_bad_dtype():
    with pytest.raises(TypeError, match="float32 or float64"):
        uniform(0, (3,), 0, np.int32)
