"""Arrays of every NumPy kind through push/pull and scatter/gather, on a real cluster
(issue 12, item 4): each comes back exactly equal (bytes, dtype, shape and class), or
fails with a clear error.

What they keep: plain arrays travel raw (never pickled) and arrive writable, read-only
ones too; a Fortran-ordered array pushed or pulled stays Fortran-ordered; a gathered
array, and anything not contiguous, arrives C-ordered.  Subclasses (np.matrix, masked
arrays) and object arrays are pickled, so they keep their class and mask.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from conftest import ENGINES

pytestmark = pytest.mark.timeout(60)


def readonly(a):
    a.flags.writeable = False
    return a


def matrix(a):
    with warnings.catch_warnings():   # np.matrix is pending deprecation, and still used
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.matrix(a)


STRUCT = np.dtype([("a", "<i4"), ("b", "<f8", (2,)), ("c", "S3")])
NESTED = np.dtype([("p", [("x", "<i2"), ("y", ">f4")]), ("q", "u1")])
PADDED = np.dtype({"names": ["a", "b"], "formats": ["<i2", "<f8"], "offsets": [0, 8],
                   "itemsize": 24})
ALIGNED = np.dtype([("a", "u1"), ("b", "<i8")], align=True)
BIG_STRUCT = np.dtype([("a", ">i4"), ("b", ">f8")])
N = 11   # items: not a multiple of ENGINES, so parts differ in length

KINDS = {
    "datetime64[D]": np.arange("2020-01-01", N, dtype="datetime64[D]"),
    "datetime64[ns] NaT": np.array(["2020-01-01T00:00:00.123456789", "NaT"] * 6,
                                   dtype="M8[ns]"),
    "datetime64 generic": np.array(["NaT"] * 5, dtype="M8"),
    "timedelta64[s]": np.arange(N).astype("m8[s]"),
    "timedelta64 NaT": np.array([1, "NaT", -3] * 4, dtype="m8[ms]"),
    "structured": np.array([(i, (i, i + .5), b"ab") for i in range(N)], dtype=STRUCT),
    "structured nested": np.array([((i, i / 2), i) for i in range(N)], dtype=NESTED),
    "structured offsets": np.arange(N * 24, dtype=np.uint8).view(PADDED),
    "structured aligned": np.array([(i, i * 100) for i in range(N)], dtype=ALIGNED),
    "structured big-endian": np.array([(i, -i) for i in range(N)], dtype=BIG_STRUCT),
    "stepped": np.arange(40)[::3],
    "stepped 2-d": np.arange(120.).reshape(12, 10)[::2, ::3],
    "negative step": np.arange(N)[::-1],
    "transposed": np.arange(24).reshape(4, 6).T,
    "fortran 2-d": np.asfortranarray(np.arange(24.).reshape(6, 4)),
    "fortran 3-d": np.asfortranarray(np.arange(60).reshape(5, 3, 4)),
    "empty": np.zeros(0),
    "empty 2-d": np.zeros((0, 3), dtype=np.int16),
    "object": np.array([1, "a", None, [2], 3.5, {"k": 1}, (7,), b"x", 2j, -1, 0],
                       dtype=object),
    "object 2-d": np.array([[1, "a"], [None, 2.5], [(1,), {}], [[], 0], ["z", 9]],
                           dtype=object),
    "unicode": np.array(["a", "bcé", "xyz", "", "ü" * 5, "q", "r", "s", "日本", "t", "u"]),
    "bytes": np.array([b"a", b"bc", b"", b"xyz", b"\x00a", b"\xff"]),
    "void": np.array([b"abcd"] * 5, dtype="V4"),
    "bool": np.array([True, False, True, True, False, False, True]),
    "int8": np.arange(-5, 6, dtype=np.int8),
    "uint64": np.array([0, 1, 2 ** 64 - 1] * 3, dtype=np.uint64),
    "float nan inf": np.array([np.nan, 1.0, np.inf, -np.inf, -0.0] * 2),
    "complex128": np.arange(N) * (1 + 2j),
    "complex64": (np.arange(N) * (1 - 2j)).astype(np.complex64),
    "float16": np.arange(N, dtype=np.float16) / 3,
    "longdouble": np.arange(N, dtype=np.longdouble) / 3,
    "big-endian int": np.arange(N, dtype=">i4"),
    "big-endian float": np.arange(N, dtype=">f8") / 7,
    "3-d": np.arange(60).reshape(5, 3, 4),
    "matrix": matrix(np.arange(12).reshape(4, 3)),
    "masked": np.ma.masked_array(np.arange(N), mask=[0, 1, 1] * 3 + [0, 0]),
    "read-only": readonly(np.arange(N)),
}
ZERO_D = {"0-d float": np.array(5.0), "0-d datetime": np.array("2021-05-05", dtype="M8[D]"),
          "0-d structured": np.array((1, (2., 3.), b"x"), dtype=STRUCT)}


def assert_same(got, want):
    """Exactly equal: class, dtype, shape, every byte (NaN and NaT too), mask."""
    assert type(got) is type(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    if want.dtype.hasobject:
        assert got.tolist() == want.tolist()
    else:
        assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes()
    if isinstance(want, np.ma.MaskedArray):
        assert np.array_equal(np.ma.getmaskarray(got), np.ma.getmaskarray(want))


@pytest.mark.parametrize("a", [*KINDS.values(), *ZERO_D.values()],
                         ids=[*KINDS, *ZERO_D])
def test_push_pull(mec, a):
    mec.push({"x": a}, targets=1)
    back = mec.pull("x", targets=1)[0]
    assert_same(back, a)
    assert back.flags.writeable
    if a.ndim > 1 and a.flags.f_contiguous and not a.flags.c_contiguous:
        assert back.flags.f_contiguous      # Fortran order is kept
    else:
        assert back.flags.c_contiguous
    # on the engine: the same class and dtype, writable, in the order it was sent
    mec.execute("seen = (type(x).__name__, x.dtype.str, x.flags.writeable, "
                "x.flags.f_contiguous)", targets=1)
    name, dtype, writable, f_order = mec.pull("seen", targets=1)[0]
    assert (name, dtype, writable) == (type(a).__name__, a.dtype.str, True)
    assert f_order == back.flags.f_contiguous


@pytest.mark.parametrize("a", KINDS.values(), ids=KINDS.keys())
def test_scatter_gather(mec, a):
    mec.scatter("x", a)
    gathered = mec.gather("x")
    assert_same(gathered, a)
    assert gathered.flags.c_contiguous and gathered.flags.writeable
    parts = mec.pull("x")
    q, r = divmod(len(a), ENGINES)
    lo = 0
    for p, part in enumerate(parts):   # block partition: the first r engines get one more
        hi = lo + q + (p < r)
        assert_same(part, a[lo:hi])
        lo = hi


@pytest.mark.parametrize("a", ZERO_D.values(), ids=ZERO_D.keys())
def test_scatter_0d_is_a_clear_error(mec, a):
    with pytest.raises(TypeError, match="scatter needs a sequence .* not a 0-d array"):
        mec.scatter("x", a)
    assert mec.pull("id") == list(range(ENGINES))


def test_scatter_gather_fewer_items_than_engines(mec):
    """Some engines get 0-length parts; the gather joins them in place all the same."""
    a = np.arange(2).astype("M8[s]")
    mec.scatter("x", a)
    assert [len(p) for p in mec.pull("x")] == [1, 1] + [0] * (ENGINES - 2)
    assert_same(mec.gather("x"), a)


# -- gathers of parts made on the engines: joined as NumPy's concatenate would ---------

GATHERS = {
    "int and float": ("numpy.arange(3) if id % 2 else numpy.arange(3.0)",
                      lambda i: np.arange(3) if i % 2 else np.arange(3.0)),
    "both byte orders": ("numpy.arange(4, dtype='>i4' if id % 2 else '<i4')",
                         lambda i: np.arange(4, dtype=">i4" if i % 2 else "<i4")),
    "string widths": ("numpy.array(['x' * (id + 1)])", lambda i: np.array(["x" * (i + 1)])),
    "fortran parts": ("numpy.asfortranarray(numpy.arange(6.).reshape(2, 3) + id)",
                      lambda i: np.asfortranarray(np.arange(6.).reshape(2, 3) + i)),
    "datetime parts": ("numpy.arange(id, id + 3).astype('M8[h]')",
                       lambda i: np.arange(i, i + 3).astype("M8[h]")),
    "structured parts": ("numpy.array([(id, (id, id), b'e')], dtype=STRUCT)",
                         lambda i: np.array([(i, (i, i), b"e")], dtype=STRUCT)),
    "object parts": ("numpy.array([id, 'e'], dtype=object)",
                     lambda i: np.array([i, "e"], dtype=object)),
    "masked parts": ("numpy.ma.masked_array([id, 7], mask=[0, 1])",
                     lambda i: np.ma.masked_array([i, 7], mask=[0, 1])),
    "array then list": ("numpy.arange(2) if id == 0 else [5, 6]",
                        lambda i: np.arange(2) if i == 0 else [5, 6]),
    "some empty": ("numpy.arange(id % 2 * 3, dtype='f4')",
                   lambda i: np.arange(i % 2 * 3, dtype="f4")),
}


@pytest.mark.parametrize("code, part", GATHERS.values(), ids=GATHERS.keys())
def test_gather_joins_parts_of_other_kinds(mec, code, part):
    mec.push({"STRUCT": STRUCT})
    mec.execute(f"import numpy; x = {code}")
    parts = [part(i) for i in range(ENGINES)]
    want = np.ma.concatenate(parts) if isinstance(parts[0], np.ma.MaskedArray) \
        else np.concatenate(parts)
    assert_same(mec.gather("x"), want)


@pytest.mark.parametrize("code, fragment", [
    ("numpy.zeros((2, id + 1))", "ndarray (2, 1), ndarray (2, 2)"),
    ("numpy.array(id)", "zero-dimensional arrays cannot be concatenated"),
    ("numpy.zeros((2, 2)) if id else numpy.zeros(2)", "ndarray (2,), ndarray (2, 2)"),
], ids=["trailing shapes", "0-d parts", "ranks"])
def test_gather_of_parts_that_do_not_join_is_a_clear_error(mec, code, fragment):
    mec.execute(f"import numpy; x = {code}")
    with pytest.raises(ValueError, match="gather cannot join the parts") as info:
        mec.gather("x")
    assert fragment in str(info.value)
    assert mec.pull("id") == list(range(ENGINES))
