"""``load_inputs``: several named tensors from one ``--input-file`` (.pt dict, .npz, .npy), dtypes kept.

Files are written here with torch.save / numpy.save / numpy.savez(_compressed), or by hand where
they must lie; every refusal is one UsageError line naming the file (docs/security.md).
"""

from __future__ import annotations

import io
import pickle
import struct
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile_corpus import NPY_CASES, PT_CASES, npy_header

from resnet_trace.errors import UsageError
from resnet_trace.loading import MAX_INPUTS, load_inputs

LIMIT_VAR = "RESNET_TRACE_MEMORY_LIMIT"
#: Hostile-corpus files that hold a fine tensor (or two) for a model of several inputs.
VALID_HERE = {"npy-2d", "npy-5d", "pt-two-tensors", "pt-2d"}
DTYPES = [np.int64, np.int32, np.int16, np.int8, np.uint8, np.bool_, np.float16, np.float32, np.float64]


def refused(path: Path, **kw) -> str:
    """The one line of the UsageError ``load_inputs(path)`` raises; it names the file."""
    with pytest.raises(UsageError) as info:
        load_inputs(path, **kw)
    line = str(info.value)
    assert "\n" not in line and "--input-file" in line and repr(str(path)) in line, line
    return line


def sample(dtype, shape=(2, 5)) -> np.ndarray:
    rng = np.random.default_rng(7)
    if np.dtype(dtype).kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def same(got: torch.Tensor, want: np.ndarray) -> None:
    assert got.dtype == torch.from_numpy(np.ascontiguousarray(want)).dtype
    assert got.is_contiguous() and tuple(got.shape) == want.shape
    assert torch.equal(got, torch.from_numpy(np.ascontiguousarray(want)))


def npz_of(path: Path, members: dict[str, bytes], compress: int = zipfile.ZIP_STORED) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name" where a test means it
        with zipfile.ZipFile(path, "w", compression=compress) as zf:
            for member, data in members.items() if isinstance(members, dict) else members:
                zf.writestr(member, data)
    return path


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


# -- what is read -----------------------------------------------------------------------------------
@pytest.mark.parametrize("writer", ["savez", "savez_compressed"])
def test_an_npz_gives_named_inputs_in_order_with_their_dtypes(tmp_path, writer):
    arrays = {f"x_{np.dtype(d).name}": sample(d) for d in DTYPES}
    arrays = {"input_ids": sample(np.int64, (2, 16)), **arrays, "attention_mask": sample(np.bool_, (2, 16))}
    getattr(np, writer)(tmp_path / "in.npz", **arrays)
    seen = []
    got = load_inputs(tmp_path / "in.npz", check=seen.append)
    assert [n for n, _ in got] == list(arrays)
    for (_, t), want in zip(got, arrays.values(), strict=True):
        same(t, want)
    (records,) = seen
    assert [(r.name, r.shape, r.dtype) for r in records] == [
        (n, a.shape, str(torch.from_numpy(a).dtype).removeprefix("torch.")) for n, a in arrays.items()
    ]


def test_positional_savez_members_keep_numpys_names(tmp_path):
    np.savez(tmp_path / "p.npz", sample(np.int64), sample(np.float32))
    assert [n for n, _ in load_inputs(tmp_path / "p.npz")] == ["arr_0", "arr_1"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_pt_dict_gives_keyword_inputs_and_a_tensor_a_positional_one(tmp_path, dtype):
    ids, other = sample(np.int64, (1, 8)), sample(dtype, (1, 3, 4))
    torch.save(
        {"pixel_values": torch.from_numpy(other), "input_ids": torch.from_numpy(ids)}, tmp_path / "d.pt"
    )
    got = load_inputs(tmp_path / "d.pt")
    assert [n for n, _ in got] == ["pixel_values", "input_ids"]
    same(got[0][1], other)
    same(got[1][1], ids)
    torch.save(torch.from_numpy(other), tmp_path / "t.pth")
    ((name, t),) = load_inputs(tmp_path / "t.pth")
    assert name is None
    same(t, other)


@pytest.mark.parametrize("variant", ["plain", "big-endian", "fortran", "3-d"])
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.float64, np.float16, np.bool_, np.uint8])
def test_an_npy_is_one_positional_input_of_its_own_dtype(tmp_path, variant, dtype):
    want = sample(dtype, (2, 3, 5))
    stored = {
        "plain": want,
        "big-endian": want.astype(want.dtype.newbyteorder(">")),
        "fortran": np.asfortranarray(want),
        "3-d": want,
    }[variant]
    np.save(tmp_path / "x.npy", stored)
    seen = []
    ((name, t),) = load_inputs(tmp_path / "x.npy", check=seen.append)
    assert name is None
    same(t, want)
    assert [(r.name, r.shape) for r in seen[0]] == [(None, (2, 3, 5))]


def test_bool_bytes_other_than_0_and_1_read_as_true(tmp_path):
    path = tmp_path / "b.npy"
    path.write_bytes(npy_header("|b1", (4,)) + bytes([0, 1, 2, 255]))
    ((_, t),) = load_inputs(path)
    assert t.tolist() == [False, True, True, True] and t.view(torch.uint8).tolist() == [0, 1, 1, 1]


def test_a_stride_0_pt_tensor_is_returned_materialised(tmp_path):
    torch.save({"x": torch.arange(3).expand(4, 3)}, tmp_path / "e.pt")
    ((_, t),) = load_inputs(tmp_path / "e.pt")
    assert t.stride() == (3, 1) and torch.equal(t, torch.arange(3).expand(4, 3))


@pytest.mark.parametrize("suffix", [".pt", ".npz", ".npy"])
def test_the_tensors_are_private_copies_not_the_files_pages(tmp_path, suffix):
    want = sample(np.int64, (4, 64))
    path = tmp_path / f"x{suffix}"
    if suffix == ".pt":
        torch.save({"ids": torch.from_numpy(want)}, path)
    elif suffix == ".npz":
        np.savez(path, ids=want)
    else:
        np.save(path, want)
    ((_, t),) = load_inputs(path)
    with open(path, "r+b") as fh:  # overwritten in place: a mapped page would change under the tensor
        fh.write(b"\xff" * path.stat().st_size)
    same(t, want)


# -- check comes first --------------------------------------------------------------------------
class NoRoom(UsageError):
    pass


def no_room(records) -> None:
    raise NoRoom(f"no room for {len(records)} tensors")


@pytest.mark.parametrize("suffix", [".pt", ".npy"])
def test_check_refuses_before_the_memory_guard_and_any_copy(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"x{suffix}"
    if suffix == ".pt":  # a small file (it goes through the guard whole) of 1 MiB once copied
        torch.save({"a": torch.zeros(64).expand(4096, 64), "b": torch.ones(8, dtype=torch.int64)}, path)
    else:
        np.save(path, np.zeros((512, 512), dtype=np.float32))
    monkeypatch.setenv(LIMIT_VAR, "64KiB")  # the guard would refuse the copy: check must speak first
    with pytest.raises(NoRoom, match="no room for"):
        load_inputs(path, check=no_room)
    assert LIMIT_VAR in refused(path)  # without the check, the guard refuses the copy


def test_check_refuses_before_an_npz_member_is_inflated(tmp_path):
    """The member's data is damaged (its CRC fails once read): a refusing check is heard instead."""
    good = npy_bytes(np.arange(4096, dtype=np.int64))
    path = npz_of(tmp_path / "crc.npz", {"ids.npy": good}, compress=zipfile.ZIP_DEFLATED)
    raw = bytearray(path.read_bytes())
    crc = struct.pack("<I", zipfile.crc32(good))
    assert raw.count(crc) == 2  # local header and directory
    raw = raw.replace(crc, struct.pack("<I", zipfile.crc32(good) ^ 1))
    path.write_bytes(bytes(raw))
    with pytest.raises(NoRoom):
        load_inputs(path, check=no_room)
    assert "CRC" in refused(path)


# -- what is refused ------------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted((set(NPY_CASES) | set(PT_CASES)) - VALID_HERE))
def test_every_hostile_npy_and_pt_file_is_refused(tmp_path, monkeypatch, case):
    monkeypatch.setenv(LIMIT_VAR, "2GiB")
    refused({**NPY_CASES, **PT_CASES}[case](tmp_path))


def test_a_pickled_object_in_a_pt_is_refused_unrun(tmp_path):
    torch.save({"x": torch.zeros(2), "f": Path("/etc/passwd")}, tmp_path / "obj.pt")
    assert "would import pathlib" in refused(tmp_path / "obj.pt")


@pytest.mark.parametrize(
    "obj,needle",
    [
        ({"a": {"b": torch.zeros(2)}}, "'a' is of type dict, not a tensor"),
        ({"a": [torch.zeros(2)]}, "'a' is of type list, not a tensor"),
        ({"a": 3}, "'a' is of type int, not a tensor"),
        ({1: torch.zeros(2)}, "a key is of type int"),
        ({"not-a-name": torch.zeros(2)}, "'not-a-name' is not a Python name"),
        ({"class": torch.zeros(2)}, "'class' is not a Python name"),
        ({}, "empty dict"),
        ((torch.zeros(2),), "holds a tuple"),
        ({f"x{i}": torch.zeros(1) for i in range(MAX_INPUTS + 1)}, f"more than {MAX_INPUTS} inputs"),
        ({"a": torch.zeros(2, 0)}, "empty tensor of shape 2x0"),
        ({"a": torch.tensor(3)}, "scalar"),
        ({"a": torch.zeros(2, dtype=torch.complex64)}, "complex"),
        ({"a": torch.zeros(2, 3).to_sparse()}, "sparse"),
        ({"a": torch.quantize_per_tensor(torch.zeros(2), 0.1, 0, torch.quint8)}, "quantized"),
        ({"a": torch.zeros(2, dtype=torch.uint16)}, "uint16"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_pt_that_is_not_named_tensors_is_refused(tmp_path, obj, needle):
    torch.save(obj, tmp_path / "x.pt")
    assert needle in refused(tmp_path / "x.pt")


@pytest.mark.parametrize(
    "arr,needle",
    [
        (np.array([1, "a", None], dtype=object), "Python objects"),
        (np.zeros(3, dtype=np.complex64), "complex"),
        (np.zeros(3, dtype="<U3"), "not numbers"),
        (np.zeros(3, dtype="S3"), "not numbers"),
        (np.zeros(3, dtype="datetime64[s]"), "not numbers"),
        (np.zeros(3, dtype=[("a", "<f4"), ("b", "<i4")]), "structured"),
        (np.zeros(3, dtype=np.longdouble), "long double"),
        (np.zeros(3, dtype=np.uint16), "uint16"),
        (np.zeros(3, dtype=np.uint64), "uint64"),
        (np.zeros((3, 0), dtype=np.float32), "empty tensor of shape 3x0"),
        (np.float32(1).reshape(()), "scalar"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
@pytest.mark.parametrize("suffix", [".npz", ".npy"])
def test_an_array_that_is_not_plain_numbers_is_refused(tmp_path, arr, needle, suffix):
    path = tmp_path / f"x{suffix}"
    if suffix == ".npz":
        np.savez(path, ids=np.zeros(2, dtype=np.int64), x=arr)  # numpy pickles an object array here
    else:
        np.save(path, arr)
    line = refused(path)
    assert needle in line
    if suffix == ".npz":
        assert "'x.npy'" in line


def test_an_npz_member_whose_header_declares_a_terabyte_is_refused_unread(tmp_path):
    """A stored member of 200 bytes whose hand-written header declares 2**37 float64s (1 TiB)."""
    lie = npy_header("<f8", (2**37,)) + b"\0" * 64
    path = npz_of(tmp_path / "lie.npz", {"ids.npy": npy_bytes(np.zeros(2, dtype=np.int64)), "x.npy": lie})
    seen = []
    t0 = time.perf_counter()
    line = refused(path, check=seen.append)
    assert time.perf_counter() - t0 < 2 and not seen
    assert "1.0 TiB" in line and "'x.npy'" in line and "64 B" in line


def test_an_npz_member_header_claiming_less_than_it_holds_is_refused(tmp_path):
    short = npy_header("<i8", (2,)) + b"\0" * 4096
    assert "holds 4.0 KiB" in refused(npz_of(tmp_path / "s.npz", {"x.npy": short}))


def test_a_deflated_member_declaring_more_than_deflate_expands_is_a_zip_bomb(tmp_path):
    """The directory's uncompressed size patched to 4 GiB behind about 100 compressed bytes."""
    data = npy_bytes(np.zeros(16, dtype=np.int64))
    path = npz_of(tmp_path / "bomb.npz", {"x.npy": data}, compress=zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("x.npy")
    raw = bytearray(path.read_bytes())
    sizes = struct.pack("<II", info.compress_size, info.file_size)
    assert raw.count(sizes) == 2
    path.write_bytes(bytes(raw.replace(sizes, struct.pack("<II", info.compress_size, 0xFFFF0000))))
    assert "zip bomb" in refused(path)


def test_a_real_deflate_bomb_beyond_memory_is_refused_before_inflating(tmp_path, monkeypatch):
    """savez_compressed of 16 MiB of zeros: about 16 KiB on disk, refused under an 8 MiB limit."""
    np.savez_compressed(tmp_path / "z.npz", x=np.zeros(16 * 2**20, dtype=np.uint8))
    assert (tmp_path / "z.npz").stat().st_size < 100_000
    monkeypatch.setenv(LIMIT_VAR, "8MiB")
    seen = []
    line = refused(tmp_path / "z.npz", check=seen.append)
    assert LIMIT_VAR in line and "16.0 MiB" in line and not seen


def test_a_stored_member_declaring_other_sizes_is_refused(tmp_path):
    data = npy_bytes(np.zeros(16, dtype=np.int64))
    path = npz_of(tmp_path / "s.npz", {"x.npy": data})
    raw = bytearray(path.read_bytes())
    sizes = struct.pack("<II", len(data), len(data))
    path.write_bytes(bytes(raw.replace(sizes, struct.pack("<II", len(data), 2**31))))
    assert "stored uncompressed" in refused(path)


def test_too_many_members_are_refused_before_the_directory_is_parsed(tmp_path, monkeypatch):
    np.savez(tmp_path / "many.npz", **{f"x{i}": np.zeros(1) for i in range(MAX_INPUTS + 1)})
    monkeypatch.setattr(zipfile, "ZipFile", None)  # reaching zipfile would fail loudly
    assert f"{MAX_INPUTS + 1} members, more than {MAX_INPUTS}" in refused(tmp_path / "many.npz")


@pytest.mark.parametrize(
    "members,needle",
    [
        ({"not-a-name.npy": b""}, "'not-a-name' is not a Python name"),
        ({"dir/x.npy": b""}, "'dir/x' is not a Python name"),
        ({"class.npy": b""}, "'class' is not a Python name"),
        ({"x.txt": b"hello"}, "'x.txt' is not a .npy array"),
        ([("x.npy", "A"), ("x.npy", "B")], "two members named 'x'"),
        ({}, "holds no arrays"),
        ({"x.npy": pickle.dumps({"a": 1})}, "magic string"),
        ({"x.npy": npy_header("<f4", (2,), version=3) + b"\0" * 8}, "format version 3.0"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_malformed_npz_is_refused(tmp_path, members, needle):
    if isinstance(members, list):
        members = [(m, npy_bytes(np.zeros(2))) for m, _ in members]
    assert needle in refused(npz_of(tmp_path / "bad.npz", members))


@pytest.mark.parametrize(
    "data,needle",
    [
        (b"", "empty"),
        (b"not a zip at all\n" * 10, "not a readable .npz file"),
        (b"PK\x03\x04" + b"\0" * 100, "not a readable .npz file"),
    ],
)
def test_a_file_that_is_no_zip_is_refused(tmp_path, data, needle):
    path = tmp_path / "x.npz"
    path.write_bytes(data)
    assert needle in refused(path)


def test_a_truncated_npz_is_refused(tmp_path):
    np.savez_compressed(tmp_path / "whole.npz", x=np.arange(10_000))
    raw = (tmp_path / "whole.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    refused(tmp_path / "cut.npz")


@pytest.mark.parametrize("name", ["x.png", "x.tiff", "noext", "x.json"])
def test_other_suffixes_are_refused(tmp_path, name):
    (tmp_path / name).write_bytes(b"\0" * 8)
    assert ".npz" in refused(tmp_path / name)


def test_special_files_are_refused(tmp_path):
    (tmp_path / "dir.npz").mkdir()
    assert "directory" in refused(tmp_path / "dir.npz")
    assert "does not exist" in refused(tmp_path / "missing.pt")
