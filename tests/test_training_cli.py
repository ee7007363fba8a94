"""The training view through the real CLI: summary --train, run --backward, compare --train.

Expected numbers come from tests/training_truth.py: saved_tensors_hooks on a real CPU forward,
and torch.autograd.grad on the same weights and input, never from the tool's output.
"""

from __future__ import annotations

import pytest
import torch
from training_truth import grad_truth, saved_truth

from resnet_trace.model import ResNet


def _seed(base: int, classes: int = 2, variant: str = "seed") -> ResNet:
    torch.manual_seed(0)  # the CLI initialises the model on the CPU under --seed 0
    return ResNet(base, classes, variant=variant)


@pytest.mark.parametrize("variant", ["seed", "fixed"])
def test_summary_train_saved_bytes_equal_the_truth(cli, variant):
    doc = cli.json("summary", "--base-dim", "16", "-i", "2x3x224x224", "--train", "--variant", variant)
    truth = saved_truth(_seed(16, variant=variant).train(), torch.randn(2, 3, 224, 224))
    assert doc["totals"]["activations_bytes"] == truth.total
    blocks = [r for r in doc["rows"] if r["kind"] == "block"]
    assert len(blocks) == 16
    for r in blocks:
        assert r["saved_bytes"] == truth.per_call[(r["name"], 1)], r["name"]
        assert r["out_bytes"] == truth.out_bytes[(r["name"], 1)], r["name"]
    train = doc["train"]
    model = _seed(16, variant=variant).train()
    model(torch.randn(2, 3, 224, 224)).sum().backward()  # a real backward says what gets a gradient
    params = sum(p.numel() for p in model.parameters()) * 4
    grads = sum(p.grad.numel() for p in model.parameters() if p.grad is not None) * 4
    assert train["params_bytes"] == params and train["grads_bytes"] == grads
    if variant == "seed":
        assert params - grads == 345_856  # the three dim_equalizer modules that never run
    assert train["optimizer"] == "adam" and train["optimizer_bytes"] == 2 * grads
    assert train["peak_bytes"] == (
        train["params_bytes"]
        + train["grads_bytes"]
        + train["optimizer_bytes"]
        + train["activations_bytes"]
        + train["transient_bytes"]
    )


def test_budget_gives_the_largest_batch_that_fits(cli):
    doc = cli.json(
        "summary", "--base-dim", "8", "-i", "1x3x224x224", "--budget", "512MiB", "--optimizer", "sgd"
    )
    fit = doc["train"]["fit_batch"]
    assert doc["train"]["budget_bytes"] == 512 * 2**20 and fit > 1

    def peak(n: int) -> int:
        d = cli.json("summary", "--base-dim", "8", "-i", f"{n}x3x224x224", "--train", "--optimizer", "sgd")
        return d["train"]["peak_bytes"]

    assert peak(fit) <= 512 * 2**20 < peak(fit + 1)


@pytest.mark.parametrize("text", ["lots", "-1GiB", "0"])
def test_a_bad_budget_is_one_usage_line(cli, text):
    result = cli("summary", "--budget", text, code=2)
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1


def test_run_backward_gradient_norms_match_a_direct_computation(cli):
    doc = cli.json("run", "--base-dim", "4", "-i", "2x3x224x224", "--backward", "--target", "1")
    model = _seed(4)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((2, 3, 224, 224), generator=gen)
    blocks = [r for r in doc["rows"] if r["kind"] == "block"]
    norms, param_norms, loss = grad_truth(model, x, target=1, names=[r["name"] for r in blocks])
    assert doc["train"]["loss"] == pytest.approx(loss, rel=1e-4)
    assert doc["train"]["target"] == 1
    for r in blocks:
        assert r["grad_norm"] == pytest.approx(norms[(r["name"], 1)], rel=1e-3), r["name"]
        assert r["param_grad_norm"] == pytest.approx(param_norms[r["name"]], rel=1e-3), r["name"]
    assert doc["train"]["peak_bytes"] > 0


def test_run_backward_refuses_a_class_the_model_does_not_have(cli):
    result = cli("run", "--base-dim", "2", "--backward", "--target", "7", code=2)
    assert "target" in result.stderr and len(result.stderr.strip().splitlines()) == 1


COMPARE_TRAIN = ("compare", "--train", "--base-dim", "2", "-i", "1x3x224x224")


@pytest.fixture(scope="module")
def compare_train_doc(session_cli) -> dict:
    """compare --train's JSON, computed once (two forwards and two backwards) for the tests below."""
    return session_cli.json(*COMPARE_TRAIN)


def test_compare_train_puts_both_variants_side_by_side(cli, compare_train_doc):
    doc = compare_train_doc
    text = cli(*COMPARE_TRAIN).stdout
    assert "saved" in text
    first = next(r for r in doc["rows"] if r["name"] == "layer_2.0")
    seed_truth = saved_truth(_seed(2).train(), torch.randn(1, 3, 224, 224))
    fixed_truth = saved_truth(_seed(2, variant="fixed").train(), torch.randn(1, 3, 224, 224))
    assert first["seed"]["saved_bytes"] == seed_truth.per_call[("layer_2.0", 1)]
    assert first["fixed"]["saved_bytes"] == fixed_truth.per_call[("layer_2.0", 1)]
    assert first["seed"]["grad_norm"] > 0 and first["fixed"]["grad_norm"] > 0


def test_compare_train_markdown_has_the_training_columns(cli, compare_train_doc):
    from formats import md_tables

    doc = compare_train_doc  # the same step (--seed 0): the Markdown must show its numbers
    (table,) = md_tables(cli(*COMPARE_TRAIN, "-f", "markdown").stdout)
    header = table[0]
    assert header[-4:] == ["saved: seed", "saved: fixed", "‖dL/dout‖: seed", "‖dL/dout‖: fixed"]
    first = next(r for r in table[2:] if r[0] == "layer_2.0")
    want = next(r for r in doc["rows"] if r["name"] == "layer_2.0")
    assert first[-2:] == [f"{want['seed']['grad_norm']:.2e}", f"{want['fixed']['grad_norm']:.2e}"]
