"""save_outputs (issue 25, item 1's writer): a run's full output tensors as .npy or .pt.

The truth is the tensors themselves: what numpy.load and torch.load(weights_only=True) read back
is compared with the originals by torch.equal, element for element."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys

import pytest
import torch

from resnet_trace.errors import ExitCode, UsageError
from resnet_trace.saving import save_outputs

np = pytest.importorskip("numpy")
POSIX = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals")


def _load_pt(path):
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize(
    "tensor",
    [
        torch.arange(24, dtype=torch.float32).reshape(2, 3, 4),
        torch.arange(12, dtype=torch.int64).reshape(3, 4).t(),  # a transpose: not contiguous
        torch.tensor(3.5, dtype=torch.float64),  # zero dimensions
        torch.tensor([True, False, True]),
        torch.randn(3, 2, dtype=torch.complex64).conj(),  # a lazy conjugate
        torch.zeros(0, 5, dtype=torch.int16),
    ],
    ids=["float32", "transposed-int64", "scalar", "bool", "conj-complex", "empty"],
)
def test_npy_reads_back_equal(tmp_path, tensor):
    target = tmp_path / "out.npy"
    saved = save_outputs(target, tensor)
    back = np.load(target, allow_pickle=False)
    assert back.shape == tuple(tensor.shape) and back.dtype == tensor.resolve_conj().numpy().dtype
    assert torch.equal(torch.from_numpy(back), tensor.resolve_conj())
    assert saved.tensors == 1 and saved.nbytes == tensor.numel() * tensor.element_size()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy"]


def test_npy_of_an_expanded_view_holds_its_logical_values(tmp_path):
    row = torch.arange(7, dtype=torch.float32)
    view = row.expand(1000, 7)  # 28 bytes of storage, 28,000 logical bytes
    target = tmp_path / "e.npy"
    save_outputs(target, view)
    back = np.load(target)
    assert back.shape == (1000, 7)
    assert torch.equal(torch.from_numpy(back), row.repeat(1000, 1))
    # the file holds every logical element: 28,000 bytes of data after its header
    assert target.stat().st_size >= 1000 * 7 * 4


def test_npy_accepts_a_nest_with_exactly_one_tensor(tmp_path):
    t = torch.arange(6.0).reshape(2, 3)
    save_outputs(tmp_path / "one.npy", {"logits": t, "aux": None})
    assert torch.equal(torch.from_numpy(np.load(tmp_path / "one.npy")), t)


def test_npy_of_several_tensors_is_refused_naming_pt(tmp_path):
    with pytest.raises(UsageError, match=r"holds 2 tensors .*\.pt") as info:
        save_outputs(tmp_path / "two.npy", (torch.zeros(2), torch.ones(3)))
    assert info.value.exit_code == ExitCode.USAGE
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float8_e4m3fn])
def test_npy_of_a_dtype_numpy_lacks_is_refused_and_pt_keeps_it(tmp_path, dtype):
    t = torch.arange(8, dtype=torch.float32).to(dtype)
    with pytest.raises(UsageError, match=r"numpy has no type for .*name a \.pt file"):
        save_outputs(tmp_path / "b.npy", t)
    assert list(tmp_path.iterdir()) == []
    save_outputs(tmp_path / "b.pt", t)
    back = _load_pt(tmp_path / "b.pt")
    assert back.dtype == dtype and torch.equal(back.float(), t.float())


class _Pair(collections.namedtuple("_Pair", "first second")):
    pass


class _Output(collections.OrderedDict):  # a model's own output class (transformers' ModelOutput is one)
    pass


def test_pt_nest_reads_back_with_weights_only(tmp_path):
    a = torch.randn(2, 3)
    b = torch.arange(10).reshape(2, 5)[:, 1:4]  # a slice: its storage is larger than it
    c = torch.tensor([1.0, 2.0]).expand(4, 2)  # a broadcast view
    d = torch.randn(3, requires_grad=True) * 2  # part of a graph
    nest = _Output(
        logits=a,
        hidden=[b, (c, None)],
        pair=_Pair(d, 7),
        meta={"name": "x", 3: 2.5, "size": torch.Size([2, 3]), "dtype": torch.float16},
        raw=np.arange(4, dtype=np.int32),
        scalar=np.float32(1.5),
    )
    target = tmp_path / "nest.pt"
    saved = save_outputs(target, nest)
    back = _load_pt(target)
    assert type(back) is dict and list(back) == ["logits", "hidden", "pair", "meta", "raw", "scalar"]
    assert torch.equal(back["logits"], a)
    assert torch.equal(back["hidden"][0], b) and back["hidden"][0].shape == (2, 3)
    assert torch.equal(back["hidden"][1][0], c) and back["hidden"][1][1] is None
    assert isinstance(back["hidden"][1], tuple)
    assert back["pair"]["second"] == 7 and torch.equal(back["pair"]["first"], d.detach())
    assert back["meta"] == {"name": "x", 3: 2.5, "size": torch.Size([2, 3]), "dtype": torch.float16}
    assert torch.equal(back["raw"], torch.arange(4, dtype=torch.int32))
    assert back["scalar"] == 1.5
    assert saved.tensors == 5
    # views are saved as their own values, not the storage behind them
    assert back["hidden"][0].untyped_storage().nbytes() == 6 * 8
    assert back["hidden"][1][0].untyped_storage().nbytes() == 8 * 4


def test_pt_of_one_tensor_and_a_shared_tensor(tmp_path):
    t = torch.randn(4, 4)
    save_outputs(tmp_path / "t.pt", t)
    assert torch.equal(_load_pt(tmp_path / "t.pt"), t)
    save_outputs(tmp_path / "s.pt", [t, t])
    back = _load_pt(tmp_path / "s.pt")
    assert torch.equal(back[0], t) and back[0].data_ptr() == back[1].data_ptr()  # saved once


@pytest.mark.parametrize(
    "outputs,match",
    [
        ({"f": lambda: 0}, r"outputs\['f'\] is a function"),
        ([torch.zeros(1), object()], r"outputs\[1\] is a object"),
        ({(1, 2): torch.zeros(1)}, r"has a key of type tuple"),
        ({1, 2}, r"outputs is a set"),
    ],
    ids=["function", "object", "tuple-key", "set"],
)
def test_pt_refuses_what_weights_only_cannot_load(tmp_path, outputs, match):
    with pytest.raises(UsageError, match=match):
        save_outputs(tmp_path / "x.pt", outputs)
    assert list(tmp_path.iterdir()) == []


def test_a_cyclic_or_too_deep_output_is_refused(tmp_path):
    cyclic: list = [torch.zeros(1)]
    cyclic.append(cyclic)
    with pytest.raises(UsageError, match="holds itself"):
        save_outputs(tmp_path / "c.pt", cyclic)
    deep: list = [torch.zeros(1)]
    for _ in range(500):
        deep = [deep]
    with pytest.raises(UsageError, match="nested deeper than"):
        save_outputs(tmp_path / "d.pt", deep)
    assert list(tmp_path.iterdir()) == []


def test_a_shape_only_tensor_has_no_values(tmp_path):
    with pytest.raises(UsageError, match="no values"):
        save_outputs(tmp_path / "m.pt", torch.empty(2, 3, device="meta"))


@pytest.mark.parametrize("name", ["out.json", "out", "out.npz", "out.pth"])
def test_another_suffix_is_refused_naming_the_accepted_ones(tmp_path, name):
    with pytest.raises(UsageError, match=r"\.npy, \.pt") as info:
        save_outputs(tmp_path / name, torch.zeros(2))
    assert str(info.value).count("\n") == 0
    assert list(tmp_path.iterdir()) == []


def test_a_folder_or_a_missing_folder_is_refused(tmp_path):
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(UsageError, match="is a directory"):
        save_outputs(tmp_path / "dir.pt", torch.zeros(2))
    with pytest.raises(UsageError, match="does not exist"):
        save_outputs(tmp_path / "no" / "x.npy", torch.zeros(2))


def test_a_view_copy_over_the_memory_limit_is_refused_and_npy_streams_it(tmp_path, monkeypatch):
    big = torch.zeros(1).expand(4 * 2**20)  # 16 MiB of logical float32 values, 4 bytes of storage
    monkeypatch.setenv("RESNET_TRACE_MEMORY_LIMIT", "8MiB")
    with pytest.raises(UsageError, match=r"16\.0 MiB .*over the limit .*name a \.npy file"):
        save_outputs(tmp_path / "big.pt", big)
    assert list(tmp_path.iterdir()) == []
    save_outputs(tmp_path / "big.npy", big)  # streamed in chunks: within the limit
    back = np.load(tmp_path / "big.npy", mmap_mode="r")
    assert back.shape == (4 * 2**20,) and not back.any()


def test_without_numpy_npy_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "numpy", None)  # import numpy now raises ImportError
    with pytest.raises(UsageError, match=r"needs numpy, which is not installed .*\.pt"):
        save_outputs(tmp_path / "x.npy", torch.zeros(2))
    assert list(tmp_path.iterdir()) == []


def test_replacing_keeps_the_mode_and_a_new_file_gets_the_umask(tmp_path):
    old = tmp_path / "old.pt"
    old.write_bytes(b"old")
    os.chmod(old, 0o640)
    save_outputs(old, torch.zeros(2))
    assert old.stat().st_mode & 0o777 == 0o640
    umask = os.umask(0)
    os.umask(umask)
    save_outputs(tmp_path / "new.pt", torch.zeros(2))
    assert (tmp_path / "new.pt").stat().st_mode & 0o777 == 0o666 & ~umask


_SIGNAL_DURING_SAVE = """
import os, signal, sys
import torch
from resnet_trace.saving import save_outputs
signum = getattr(signal, sys.argv[1])
target = os.path.abspath(sys.argv[2])
real_open = os.open
def hooked(path, flags, *args, **kwargs):
    fd = real_open(path, flags, *args, **kwargs)
    name = os.path.abspath(os.fsdecode(path))
    if flags & os.O_CREAT and os.path.dirname(name) == os.path.dirname(target) and name != target:
        os.kill(os.getpid(), signum)
    return fd
os.open = hooked
save_outputs(target, {"a": torch.zeros(1000), "b": [torch.ones(3)]})
print("survived")
"""


@POSIX
@pytest.mark.parametrize("name,code", [("SIGTERM", -signal.SIGTERM), ("SIGINT", -signal.SIGINT)])
def test_a_signal_as_the_temporary_file_is_created_leaves_nothing(tmp_path, name, code):
    target = tmp_path / "out.pt"
    target.write_bytes(b"old")
    proc = subprocess.run(
        [sys.executable, "-c", _SIGNAL_DURING_SAVE, name, str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # SIGTERM: dies of it; SIGINT: Python's KeyboardInterrupt, uncaught, ends it as SIGINT would
    assert proc.returncode == code, proc.stderr
    assert "survived" not in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pt"]
    assert target.read_bytes() == b"old"


def test_numpy_scalars_subclassed_leaves_and_big_endian_arrays_read_back_weights_only(tmp_path):
    """np.float64 and np.str_ are also float and str, an IntEnum is also an int: each is written as
    the plain value, never pickled as its own class; a big-endian array becomes a native tensor."""
    import enum

    import numpy as np

    from resnet_trace.saving import save_outputs

    class Color(enum.IntEnum):
        RED = 1

    path = tmp_path / "mixed.pt"
    save_outputs(
        path,
        {"s": np.float64(1.5), "t": np.str_("hi"), "c": Color.RED, "be": np.arange(3, dtype=">f4")},
    )
    got = torch.load(path, weights_only=True)
    assert (type(got["s"]), got["s"]) == (float, 1.5)
    assert (type(got["t"]), got["t"]) == (str, "hi")
    assert (type(got["c"]), got["c"]) == (int, 1)
    assert torch.equal(got["be"], torch.tensor([0.0, 1.0, 2.0]))
