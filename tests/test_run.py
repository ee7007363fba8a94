"""``run`` with real numbers, checked against direct computation on the same model and input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resnet_trace.api import build_target, trace_run
from resnet_trace.model import ResNet
from resnet_trace.spec import ModelSpec


def seeded(base_dim: int, classes: int, shape: tuple[int, ...], seed: int = 0):
    """The documented contract of ``run``: init under manual_seed(seed), input from a seeded generator."""
    torch.manual_seed(seed)
    model = ResNet(base_dim, classes).eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return model, x


def test_logits_equal_a_direct_forward(cli):
    model, x = seeded(4, 3, (2, 3, 224, 210))
    doc = cli.json("run", "--base-dim", "4", "--num-classes", "3", "--input", "2x3x224x210")
    with torch.no_grad():
        expected = model(x)
    assert doc["device"] == "cpu" and doc["output_shape"] == [2, 3]
    assert torch.allclose(torch.tensor(doc["logits"]), expected, atol=1e-6)


def test_activation_statistics_equal_direct_block_outputs(cli):
    model, x = seeded(4, 2, (1, 3, 224, 224), seed=3)
    captured = {}
    for name in ("layer_2.0", "layer_3.3", "layer_5.2"):
        model.get_submodule(name).register_forward_hook(
            lambda m, a, out, name=name: captured.__setitem__(name, out.detach().clone())
        )
    with torch.no_grad():
        model(x)
    doc = cli.json("run", "--base-dim", "4", "--seed", "3")
    rows = {r["name"]: r for r in doc["rows"]}
    for name, out in captured.items():
        stats = rows[name]["activation"]
        assert stats["mean"] == pytest.approx(out.mean().item(), rel=1e-5, abs=1e-7)
        assert stats["std"] == pytest.approx(out.std().item(), rel=1e-5)
        assert stats["min"] == pytest.approx(out.min().item(), rel=1e-6)
        assert stats["max"] == pytest.approx(out.max().item(), rel=1e-6)
        assert stats["zero_fraction"] == pytest.approx((out == 0).float().mean().item(), abs=1e-9)


def test_seed_is_reproducible_and_matters(cli):
    a = cli.json("run", "--base-dim", "2", "--seed", "5")
    b = cli.json("run", "--base-dim", "2", "--seed", "5")
    c = cli.json("run", "--base-dim", "2", "--seed", "6")
    assert a["logits"] == b["logits"]
    assert a["logits"] != c["logits"]


@pytest.mark.parametrize("suffix", [".pt", ".npy"])
def test_input_files(cli, tmp_path, suffix):
    model, _ = seeded(4, 2, (1, 3, 224, 224))
    x = torch.rand(2, 3, 200, 200)
    path = tmp_path / f"x{suffix}"
    if suffix == ".pt":
        torch.save(x, path)
    else:
        np.save(path, x.numpy())
    doc = cli.json("run", "--base-dim", "4", "--input-file", str(path))
    assert doc["input_shape"] == [2, 3, 200, 200]
    assert doc["run"]["input_file"] == str(path)
    with torch.no_grad():
        expected = model(x)
    assert torch.allclose(torch.tensor(doc["logits"]), expected, atol=1e-6)


def test_checkpoint_from_the_seeds_own_code(cli, tmp_path, seed_module):
    torch.manual_seed(11)
    seed_model = seed_module["ResNet"](4, 6).eval()
    ckpt = tmp_path / "seed.pt"
    torch.save(seed_model.state_dict(), ckpt)
    x = torch.randn(1, 3, 224, 224)
    xpath = tmp_path / "x.pt"
    torch.save(x, xpath)
    doc = cli.json(
        "run", "--weights", str(ckpt), "--base-dim", "4", "--num-classes", "6", "--input-file", str(xpath)
    )
    with torch.no_grad():
        expected = seed_model(x)
    assert torch.allclose(torch.tensor(doc["logits"]), expected, atol=1e-6)
    probs = torch.softmax(expected, dim=1)[0]
    order = torch.argsort(probs, descending=True)[:5].tolist()
    top = doc["top_k"][0]
    assert [t["class"] for t in top] == order
    assert [t["prob"] for t in top] == pytest.approx(probs[order].tolist(), rel=1e-5)


def test_top_k_defaults_to_five_or_the_class_count(cli):
    assert len(cli.json("run", "--base-dim", "2", "--num-classes", "9")["top_k"][0]) == 5
    assert len(cli.json("run", "--base-dim", "2", "--num-classes", "3")["top_k"][0]) == 3
    assert len(cli.json("run", "--base-dim", "2", "--num-classes", "9", "--top-k", "7")["top_k"][0]) == 7


def test_block_times_positive_and_within_the_forward(cli):
    doc = cli.json("run", "--base-dim", "8")
    blocks = [r for r in doc["rows"] if r["kind"] == "block"]
    assert len(blocks) == 16 and all(r["time_ms"] > 0 for r in blocks)
    # One pass: block-depth rows (stem, blocks, avgpool, fc_layer) are disjoint intervals
    # inside the forward, and exclude the hooks' own time, so they add up to less than it.
    assert sum(r["time_ms"] for r in doc["rows"]) <= doc["run"]["forward_ms"]


def test_repeat_reports_medians_and_the_hook_overhead(cli):
    doc = cli.json("run", "--base-dim", "4", "--repeat", "3")
    overhead = doc["run"]["hook_overhead_ms"]
    # Below the spread of the plain forwards the overhead is noise and is not reported; never negative.
    assert doc["run"]["repeat"] == 3 and (overhead is None or overhead > 0)
    assert all(r["time_ms"] > 0 for r in doc["rows"])


def test_dtype_and_meta_device(cli):
    doc = cli.json("run", "--base-dim", "2", "--dtype", "bfloat16")
    assert doc["dtype"] == "bfloat16" and doc["output_shape"] == [1, 2]
    meta = cli.json("run", "--device", "meta")
    assert meta["device"] == "meta" and meta["totals"]["macs"] == 5_368_434_688
    assert all("activation" not in r for r in meta["rows"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_missing_cuda_is_a_usage_error(cli):
    result = cli("run", "--device", "cuda", code=2)
    assert "cuda" in result.stderr.lower() and len(result.stderr.strip().splitlines()) == 1


def test_table_shows_time_statistics_and_top_k(cli):
    out = cli("run", "--base-dim", "2", "--num-classes", "4").stdout
    for word in ("time ms", "mean", "std", "zero %", "Top 4 of sample 0"):
        assert word in out


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA"])
def test_png_input_equals_the_pixels_pillow_reads(cli, tmp_path, mode):
    pil = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(7)
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}[mode]
    # A smooth gradient plus noise, so the encoder uses several PNG row filters.
    base = np.add.outer(np.arange(200), np.arange(210)) % 256
    pixels = (base[..., None] + rng.integers(0, 9, size=(200, 210, channels))).clip(0, 255).astype(np.uint8)
    path = tmp_path / "x.png"
    pil.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode).save(path, optimize=True)
    rgb = np.asarray(pil.open(path).convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)
    model, _ = seeded(4, 2, (1, 3, 224, 224))
    doc = cli.json("run", "--base-dim", "4", "--input-file", str(path))
    assert doc["input_shape"] == [1, 3, 200, 210]
    with torch.no_grad():
        expected = model(x)
    assert torch.allclose(torch.tensor(doc["logits"]), expected, atol=1e-6)


def test_jpeg_is_refused_with_a_reason(cli, tmp_path):
    path = tmp_path / "x.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0")
    result = cli("run", "--input-file", str(path), code=2)
    assert "JPEG" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_meta_run_honours_dtype(cli):
    assert cli.json("run", "--device", "meta", "--dtype", "bfloat16")["dtype"] == "bfloat16"


def test_layer_depth_run_gives_statistics_of_every_call(cli):
    torch.manual_seed(0)
    from resnet_trace.model import ResNet

    model = ResNet(4, 2).eval()
    x = torch.randn((1, 3, 224, 224), generator=torch.Generator().manual_seed(0))
    seen = {}
    conv = model.get_submodule("layer_3.1.layer.1.0")
    conv.register_forward_hook(lambda m, a, out: seen.setdefault("out", out.detach().clone()))
    with torch.no_grad():
        model(x)
    doc = cli.json("run", "--base-dim", "4", "--depth", "layer", "--filter", r"layer_3\.1")
    row = next(r for r in doc["rows"] if r["name"] == "layer_3.1.layer.1.0")
    assert row["activation"]["mean"] == pytest.approx(seen["out"].mean().item(), rel=1e-5, abs=1e-8)
    assert row["activation"]["max"] == pytest.approx(seen["out"].max().item(), rel=1e-6)


def test_timed_passes_run_in_eval_and_restore_the_flag():
    target = build_target(ModelSpec(base_dim=2), device="cpu", init_seed=0)
    target.model.train()
    modes = []
    target.model.register_forward_pre_hook(lambda m, a: modes.append(m.training))
    trace_run(target, torch.randn(1, 3, 224, 224), repeat=3)
    assert len(modes) == 1 + 2 * 3 and not any(modes)
    assert target.model.training is True
