"""``--save-output``'s size check counts what the file holds (issue 25, a review's finding): a
sparse tensor is its indices and values, not its logical size; numpy's refusal of a layout it
lacks comes before any size is weighed."""

from __future__ import annotations

import warnings

import pytest
import torch

from resnet_trace.errors import UsageError
from resnet_trace.saving import save_outputs


def _huge_sparse() -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note on sparse invariant checks
        # one stored value in a 10^6 x 10^6 matrix: 4 TB of logical float32, 20 bytes stored
        return torch.sparse_coo_tensor(torch.tensor([[7], [9]]), torch.tensor([2.5]), (10**6, 10**6))


def test_a_huge_sparse_output_is_saved_as_its_stored_values(tmp_path):
    coo, csr = _huge_sparse(), torch.eye(3).to_sparse_csr()
    saved = save_outputs(tmp_path / "s.pt", {"coo": coo, "csr": csr})
    # by hand: COO indices 2x1 int64 + values 1 float32; CSR crow 4 + col 3 int64 + values 3 float32
    assert saved.nbytes == (2 * 8 + 4) + (4 * 8 + 3 * 8 + 3 * 4)
    back = torch.load(tmp_path / "s.pt", weights_only=True)
    assert back["coo"].shape == (10**6, 10**6) and back["coo"]._values().tolist() == [2.5]
    assert back["coo"]._indices().tolist() == [[7], [9]]
    assert torch.equal(back["csr"].to_dense(), torch.eye(3))


def test_a_sparse_output_to_npy_is_refused_for_its_layout_not_its_size(tmp_path):
    with pytest.raises(UsageError, match="sparse_coo tensor; name a .pt file"):
        save_outputs(tmp_path / "s.npy", _huge_sparse())
    assert list(tmp_path.iterdir()) == []


def test_a_dense_output_still_counts_every_element(tmp_path):
    view = torch.ones(3).expand(5, 3)  # 12 bytes of storage, 60 bytes of values in either file
    assert save_outputs(tmp_path / "v.pt", view).nbytes == 5 * 3 * 4
    assert save_outputs(tmp_path / "v.npy", view).nbytes == 5 * 3 * 4


class _OneMiBFree:
    f_bavail, f_frsize = 256, 4096


@pytest.mark.parametrize("suffix", [".npy", ".pt"])
def test_a_file_larger_than_the_disk_is_refused_before_any_copy(tmp_path, monkeypatch, suffix):
    """A 1 GiB conjugated view of 8 bytes: the folder has 1 MiB free. The refusal comes before
    the view is made into values (a copy the size of the file, or a GPU tensor's trip to the CPU)."""
    from resnet_trace import saving

    monkeypatch.setattr(saving.os, "statvfs", lambda folder: _OneMiBFree())
    copied = []
    real_as_array, real_own = saving._as_array, saving._own
    monkeypatch.setattr(saving, "_as_array", lambda t: copied.append(t) or real_as_array(t))
    monkeypatch.setattr(saving, "_own", lambda t: copied.append(t) or real_own(t))
    view = torch.zeros(1, dtype=torch.complex64).expand(2**27).conj()  # 2^27 x 8 bytes = 1 GiB
    with pytest.raises(UsageError, match=r"would hold 1\.0 GiB of tensor values, over the 1\.0 MiB free"):
        save_outputs(tmp_path / f"big{suffix}", view)
    assert copied == [] and list(tmp_path.iterdir()) == []
    small = torch.arange(6.0).reshape(2, 3)
    save_outputs(tmp_path / f"small{suffix}", small)  # 24 bytes: written under the same 1 MiB
    assert copied and (tmp_path / f"small{suffix}").stat().st_size > 24
