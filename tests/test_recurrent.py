"""Recurrent layers: every multiply-accumulate counted, the same on CPU, ``meta`` and fake tensors.

The expected numbers come from the layer arithmetic written here (:func:`rnn_macs`), never from
the tool: ``gates x hidden x (input + hidden)`` per time step, layer and direction (4, 3, 1 gates),
``proj_size x hidden`` more per step for an LSTM's projection, biases not counted.

The paths differ underneath: on a real CPU forward an ``nn.LSTM`` is one fused oneDNN operation
per layer and direction (``aten.mkldnn_rnn_layer``), which ``FlopCounterMode`` counts as 0, while
``nn.GRU``/``nn.RNN``, the cells and an LSTM with ``proj_size`` run as ``addmm``/``mm``; on
``meta`` every one runs as ``addmm``/``mm`` step by step. Fake tensors follow their device: a real
CPU model with fake inputs takes the fused operation, a ``meta`` model the products.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn.utils.rnn import PackedSequence
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from resnet_trace.ops.macs import op_macs
from resnet_trace.target import model_target
from resnet_trace.tracer import run_forward

aten = torch.ops.aten

GATES = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1, nn.LSTMCell: 4, nn.GRUCell: 3, nn.RNNCell: 1}
PATHS = ("cpu", "meta", "fake_meta", "fake_cpu")


def rnn_macs(
    gates: int, input_size: int, hidden: int, rows: int, *, layers: int = 1, dirs: int = 1, proj: int = 0
) -> int:
    """Layer arithmetic: ``rows`` is time steps x batch (or a packed sequence's rows)."""
    out = proj or hidden
    per_row = 0
    for layer in range(layers):
        inp = input_size if layer == 0 else out * dirs
        per_row += dirs * (gates * hidden * (inp + out) + proj * hidden)
    return rows * per_row


def traced_macs(make_model: Callable[[], nn.Module], make_input: Callable[[str], Any], path: str) -> int:
    """The tool's total for one forward: ``cpu`` (real), ``meta``, ``fake_meta`` (a ``meta`` model,
    fake ``meta`` inputs), ``fake_cpu`` (a real CPU model, fake CPU inputs)."""
    on_meta = path in ("meta", "fake_meta")
    torch.manual_seed(0)
    if on_meta:
        with torch.device("meta"):
            model = make_model()
    else:
        model = make_model()
    target = model_target(model, block=[])
    device = "meta" if on_meta else "cpu"
    if path.startswith("fake"):
        with FakeTensorMode(allow_non_fake_inputs=True):
            fwd = run_forward(target, make_input(device))
    else:
        fwd = run_forward(target, make_input(device))
    assert fwd.failure is None, (path, fwd.failure)
    return fwd.recorder.macs


def seq(t: int, b: int, size: int, *, batch_first: bool = False) -> Callable[[str], torch.Tensor]:
    shape = (b, t, size) if batch_first else (t, b, size)
    return lambda device: torch.randn(shape, device=device)


def assert_all_paths(
    make_model: Callable[[], nn.Module], make_input: Callable[[str], Any], expected: int
) -> None:
    got = {path: traced_macs(make_model, make_input, path) for path in PATHS}
    assert got == dict.fromkeys(PATHS, expected)


# ---------------------------------------------------------------- nn.LSTM, nn.GRU, nn.RNN


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN], ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    ("layers", "bidirectional", "batch_first", "t", "b"),
    [
        (1, False, False, 5, 3),
        (1, False, True, 7, 2),
        (2, False, True, 4, 1),
        (1, True, False, 3, 4),
        (2, True, False, 6, 2),
        (2, True, True, 1, 5),
    ],
    ids=lambda v: str(v),
)
def test_recurrent_layer_macs_on_every_path(cls, layers, bidirectional, batch_first, t, b):
    i, h = 6, 10

    def make():
        return cls(i, h, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)

    dirs = 2 if bidirectional else 1
    expected = rnn_macs(GATES[cls], i, h, t * b, layers=layers, dirs=dirs)
    assert_all_paths(make, seq(t, b, i, batch_first=batch_first), expected)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize(
    ("layers", "bidirectional", "batch_first"),
    [(1, False, False), (2, True, True), (2, False, False)],
    ids=lambda v: str(v),
)
def test_lstm_with_projection(layers, bidirectional, batch_first):
    i, h, p, t, b = 6, 12, 5, 4, 3

    def make():
        return nn.LSTM(
            i, h, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, proj_size=p
        )

    dirs = 2 if bidirectional else 1
    expected = rnn_macs(4, i, h, t * b, layers=layers, dirs=dirs, proj=p)
    assert_all_paths(make, seq(t, b, i, batch_first=batch_first), expected)


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.LSTM(6, 10, bias=False),
        lambda: nn.GRU(6, 10, bias=False, num_layers=2),
        lambda: nn.RNN(6, 10, nonlinearity="relu", bidirectional=True),
    ],
    ids=["lstm-no-bias", "gru-no-bias", "rnn-relu"],
)
def test_biases_and_nonlinearity_do_not_change_the_count(make):
    m = make()
    dirs = 2 if m.bidirectional else 1
    expected = rnn_macs(GATES[type(m)], 6, 10, 5 * 2, layers=m.num_layers, dirs=dirs)
    assert_all_paths(make, seq(5, 2, 6), expected)


def test_unbatched_input_and_initial_state_as_kwargs():
    i, h, t = 6, 10, 7

    def unbatched(device):
        return torch.randn(t, i, device=device)

    assert_all_paths(lambda: nn.LSTM(i, h), unbatched, rnn_macs(4, i, h, t))

    def with_state(device):
        zeros = torch.zeros(2, 3, h, device=device)
        return {"input": torch.randn(t, 3, i, device=device), "hx": (zeros, zeros.clone())}

    assert_all_paths(lambda: nn.LSTM(i, h, num_layers=2), with_state, rnn_macs(4, i, h, t * 3, layers=2))


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN], ids=lambda c: c.__name__)
def test_packed_sequence_counts_its_rows(cls):
    """A packed sequence of lengths 4, 4, 2, 1: steps shrink with the batch, 11 rows in all.

    Not on fake tensors: PyTorch's packed forward reads ``batch_sizes`` as numbers, which fake
    mode refuses (``DataDependentOutputException``) with or without the tool.
    """
    i, h = 6, 10
    batch_sizes = torch.tensor([4, 3, 2, 2])

    def packed(device):
        return PackedSequence(torch.randn(int(batch_sizes.sum()), i, device=device), batch_sizes)

    expected = rnn_macs(GATES[cls], i, h, 11, layers=2, dirs=2)
    for path in ("cpu", "meta"):
        assert traced_macs(lambda: cls(i, h, num_layers=2, bidirectional=True), packed, path) == expected, (
            path
        )


# ---------------------------------------------------------------- cells


@pytest.mark.parametrize("cls", [nn.LSTMCell, nn.GRUCell, nn.RNNCell], ids=lambda c: c.__name__)
@pytest.mark.parametrize("b", [1, 4])
def test_cells_count_one_step(cls, b):
    i, h = 6, 10
    assert_all_paths(
        lambda: cls(i, h), lambda device: torch.randn(b, i, device=device), rnn_macs(GATES[cls], i, h, b)
    )


# ---------------------------------------------------------------- a whole model


class TextClassifier(nn.Module):
    def __init__(
        self, vocab: int = 50, emb: int = 8, hidden: int = 12, classes: int = 3, layers: int = 2
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(tokens))
        return self.fc(out[:, -1])


def tokens(b: int, t: int) -> Callable[[str], torch.Tensor]:
    return lambda device: torch.randint(0, 50, (b, t), device=device)


@pytest.mark.parametrize(("b", "t"), [(1, 9), (4, 6)])
def test_text_classifier_total_is_lstm_formula_plus_linear(b, t):
    emb, hidden, classes = 8, 12, 3
    lstm = rnn_macs(4, emb, hidden, b * t, layers=2, dirs=2)
    linear = b * (2 * hidden) * classes
    assert_all_paths(TextClassifier, tokens(b, t), lstm + linear)  # the embedding lookup adds 0

    # PyTorch's own counter on the parts it can count: the linear head on a real CPU forward
    # (the fused LSTM is 0 to it), and the whole model on meta, where the LSTM is products.
    torch.manual_seed(0)
    model = TextClassifier().eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(tokens(b, t)("cpu"))
    assert sum(counter.get_flop_counts()["TextClassifier.fc"].values()) // 2 == linear
    with torch.device("meta"):
        meta_model = TextClassifier().eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta_model(tokens(b, t)("meta"))
    assert counter.get_total_flops() // 2 == lstm + linear


@pytest.mark.parametrize("cls", [nn.GRU, nn.RNN], ids=lambda c: c.__name__)
def test_formula_agrees_with_flop_counter_where_pytorch_runs_products(cls):
    """The test's own formula, checked once against PyTorch's counter on a CPU forward of products."""
    m = cls(6, 10, num_layers=2, bidirectional=True)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        m(torch.randn(5, 3, 6))
    assert counter.get_total_flops() // 2 == rnn_macs(GATES[cls], 6, 10, 15, layers=2, dirs=2)


# ---------------------------------------------------------------- the fused operations themselves


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.append(func)
        return func(*args, **(kwargs or {}))


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")
def test_cpu_lstm_reaches_the_mode_as_the_fused_onednn_layer():
    """The real CPU path these tests cover: one ``mkldnn_rnn_layer`` per layer and direction."""
    with torch.no_grad(), _Ops() as ops:
        nn.LSTM(6, 10, num_layers=2, bidirectional=True)(torch.randn(5, 3, 6))
    assert ops.seen.count(aten.mkldnn_rnn_layer.default) == 4
    assert aten.mm.default not in ops.seen and aten.addmm.default not in ops.seen


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize(
    ("op", "weights_at"),
    [("_cudnn_rnn", 1), ("miopen_rnn", 1), ("_lstm_mps", 2)],
)
@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.LSTM(6, 10, num_layers=2, bidirectional=True),
        lambda: nn.LSTM(6, 10, num_layers=2, bidirectional=True, proj_size=4),
        lambda: nn.GRU(6, 10, bias=False),
    ],
    ids=["lstm", "lstm-proj", "gru"],
)
def test_whole_stack_gpu_operations_count_every_weight_matrix_per_step(op, weights_at, make):
    """cuDNN, MIOpen and MPS take the module's flat weight list in one call (not runnable here:
    the rule is checked on the arguments as their schemas lay them out)."""
    packet = getattr(aten, op, None)
    if packet is None:
        pytest.skip(f"aten.{op} is not in this build")
    with torch.device("meta"):
        m = make()
    t, b = 5, 3
    x = torch.empty(t, b, 6, device="meta")
    hx = [torch.empty(m.num_layers * 2, b, 10, device="meta")]
    args: tuple = (x, m._flat_weights) if weights_at == 1 else (x, hx, m._flat_weights)
    dirs = 2 if m.bidirectional else 1
    expected = rnn_macs(GATES[type(m)], 6, 10, t * b, layers=m.num_layers, dirs=dirs, proj=m.proj_size)
    assert op_macs(packet.default, args, None) == expected


def test_embedding_is_zero():
    assert_all_paths(lambda: nn.Embedding(50, 8), tokens(3, 4), 0)
