"""The numbers of docs/models.md's text-model table: resnet-trace beside torchinfo and FlopCounterMode.

    python benchmarks/text_models.py

BERT and GPT-2 at their base sizes and Llama-3-8B from its published config, random weights,
nothing downloaded. The truths: unique parameter tensors, and ``FlopCounterMode`` / 2 on a real
CPU forward with the math attention backend (BERT, GPT-2; Llama-3-8B under FakeTensorMode, where
FlopCounterMode counts the same products without memory). torchinfo (where installed) is called
as its README shows, with ``input_data`` holding the token ids.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import resnet_trace as rt

SEQ = 128
ROOT = Path(__file__).resolve().parents[1]


def _bert():
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(BertConfig())


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config())


def _inputs(name: str) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 1000, (1, SEQ))
    return (
        {"input_ids": ids, "attention_mask": torch.ones_like(ids)} if name == "bert" else {"input_ids": ids}
    )


def _truth_macs(model, kwargs, fake: bool = False) -> int:
    counter = FlopCounterMode(display=False)
    if fake:
        from torch._subclasses.fake_tensor import FakeTensorMode

        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            kwargs = {k: mode.from_tensor(v) for k, v in kwargs.items()}
            with sdpa_kernel(SDPBackend.MATH), counter, torch.no_grad():
                model(**kwargs)
    else:
        with sdpa_kernel(SDPBackend.MATH), counter, torch.no_grad():
            model(**kwargs)
    return counter.get_total_flops() // 2


def _torchinfo(model, kwargs) -> tuple[int, int] | str:
    try:
        import torchinfo
    except ImportError:
        return "not installed"
    try:
        s = torchinfo.summary(model, input_data=kwargs, verbose=0)
    except Exception as exc:  # what a user would see
        return f"fails: {type(exc).__name__}"
    return s.total_params, s.total_mult_adds


def main() -> None:
    rows = {}
    for name, make in (("bert", _bert), ("gpt2", _gpt2)):
        torch.manual_seed(0)
        model = make().eval()
        kwargs = _inputs(name)
        spec = ",".join(f"{k}=1x{SEQ}:int64" for k in kwargs)
        t0 = time.perf_counter()
        r = rt.trace(model=model, inputs=spec).trace
        seconds = time.perf_counter() - t0
        rows[name] = {
            "truth params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
            "truth MACs (FlopCounterMode/2, math attention)": _truth_macs(model, kwargs),
            "FlopCounterMode/2, default CPU attention": _default_macs(model, kwargs),
            "resnet-trace params": r.totals.params,
            "resnet-trace MACs": r.totals.macs,
            "resnet-trace seconds": round(seconds, 2),
            "torchinfo (params, mult-adds)": _torchinfo(model, kwargs),
        }
    config = ROOT / "docs" / "examples" / "llama-3-8b" / "config.json"
    t0 = time.perf_counter()
    from resnet_trace.choice import ModelChoice, TraceOptions
    from resnet_trace.inputs import parse_inputs
    from resnet_trace.pipeline import trace_inputs

    (t,) = trace_inputs(
        ModelChoice(model=str(config)), parse_inputs([f"input_ids=1x{SEQ}:int64"]), TraceOptions()
    )
    seconds = time.perf_counter() - t0
    from torch._subclasses.fake_tensor import FakeTensorMode
    from transformers import AutoConfig, LlamaForCausalLM

    raw = json.loads(config.read_text())
    cfg = AutoConfig.for_model(
        raw.pop("model_type"), **{k: v for k, v in raw.items() if k != "architectures"}
    )
    with FakeTensorMode(allow_non_fake_inputs=True):
        llama = LlamaForCausalLM(cfg)
    rows["llama-3-8b"] = {
        "truth params": sum(p.numel() for p in {id(p): p for p in llama.parameters()}.values()),
        "truth MACs (FlopCounterMode/2, math attention, fake tensors)": _truth_macs(
            llama, {"input_ids": torch.zeros(1, SEQ, dtype=torch.long)}, fake=True
        ),
        "resnet-trace params": t.totals.params,
        "resnet-trace MACs": t.totals.macs,
        "resnet-trace seconds": round(seconds, 2),
        "torchinfo (params, mult-adds)": "not run: it would allocate 32 GB of weights",
    }
    print(json.dumps(rows, indent=2))


def _default_macs(model, kwargs) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(**kwargs)
    return counter.get_total_flops() // 2


if __name__ == "__main__":
    main()
