"""--model PATH/config.json: a transformers model built from its config, no weights, no download.

Configs are JSON files written into tmp_path. Expected parameter counts come from the same model
built directly through transformers' own config class (unique tensors summed here), or from the
published sizes of Llama-3 (8,030,261,248 and 70,553,706,496), never from the tool."""

from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

from resnet_trace.errors import UsageError  # noqa: E402
from resnet_trace.hfconfig import (  # noqa: E402
    MAX_CONFIG_BYTES,
    build_from_config,
    config_path,
    example_inputs,
    is_config_ref,
)
from resnet_trace.usermodel import build_model, import_reference  # noqa: E402

SMALL = {
    "LlamaForCausalLM": {
        "model_type": "llama",
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 160,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
    },
    "BertForSequenceClassification": {
        "model_type": "bert",
        "vocab_size": 500,
        "hidden_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 96,
        "num_labels": 3,
    },
    "GPT2LMHeadModel": {
        "model_type": "gpt2",
        "vocab_size": 400,
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 4,
        "n_positions": 64,
    },
    "T5ForConditionalGeneration": {
        "model_type": "t5",
        "vocab_size": 300,
        "d_model": 32,
        "d_kv": 8,
        "d_ff": 64,
        "num_layers": 2,
        "num_heads": 4,
    },
}

LLAMA3 = {
    "model_type": "llama",
    "vocab_size": 128256,
    "intermediate_size": 14336,
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "tie_word_embeddings": False,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-05,
    "torch_dtype": "bfloat16",
    "bos_token_id": 128000,
    "eos_token_id": 128001,
}


def _write(tmp_path, arch: str | None, fields: dict, name: str = "config.json"):
    doc = dict(fields) if arch is None else {"architectures": [arch], **fields}
    path = tmp_path / name
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def unique_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _direct(arch: str, fields: dict) -> torch.nn.Module:
    """The same model built by hand from transformers' config class: the independent count."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    rest = {k: v for k, v in fields.items() if k != "model_type"}
    config = CONFIG_MAPPING[fields["model_type"]](**rest)
    return getattr(transformers, arch)(config)


def _refused(excinfo, path) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    return message


# -- what is a config reference ------------------------------------------------------------------
def test_a_json_path_or_a_folder_is_a_config_reference_and_python_is_not(tmp_path):
    assert is_config_ref("x/config.json") and is_config_ref("model.JSON")
    assert is_config_ref(str(tmp_path))
    assert not is_config_ref("model.py:Net") and not is_config_ref("torchvision.models:resnet18")
    assert not is_config_ref("")
    assert config_path(str(tmp_path)) == tmp_path / "config.json"
    assert str(config_path("a/b.json")) == "a/b.json"


def test_import_reference_is_never_asked_to_import_a_json(tmp_path):
    path = _write(tmp_path, "LlamaForCausalLM", SMALL["LlamaForCausalLM"])
    with pytest.raises(UsageError, match="is a config, not Python"):
        import_reference(str(path))


# -- builds: the right class and the parameters of a direct build ---------------------------------
@pytest.mark.parametrize("arch", list(SMALL))
def test_small_config_builds_on_meta_as_transformers_builds_it(tmp_path, arch):
    path = _write(tmp_path, arch, SMALL[arch])
    model = build_from_config(path)
    assert type(model).__name__ == arch
    assert all(p.is_meta for p in model.parameters())
    assert unique_params(model) == unique_params(_direct(arch, SMALL[arch]))
    assert model.config._attn_implementation == "sdpa"  # chosen explicitly, never the library's default


@pytest.mark.parametrize(
    "size, expected",
    [
        ({}, 8_030_261_248),
        (
            {
                "hidden_size": 8192,
                "intermediate_size": 28672,
                "num_hidden_layers": 80,
                "num_attention_heads": 64,
            },
            70_553_706_496,
        ),
    ],
    ids=["llama3-8b", "llama3-70b"],
)
def test_llama3_configs_build_on_meta_with_their_published_sizes(tmp_path, size, expected):
    path = _write(tmp_path, "LlamaForCausalLM", {**LLAMA3, **size})
    model = build_from_config(path, device="meta")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert unique_params(model) == expected
    assert all(t.is_meta for t in [*model.parameters(), *model.buffers()])  # nothing allocated
    # the file's torch_dtype is not applied: built in float32, --dtype casts
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_a_folder_holding_config_json_builds_through_build_model(tmp_path):
    _write(tmp_path, "GPT2LMHeadModel", SMALL["GPT2LMHeadModel"])
    model = build_model(str(tmp_path), {})
    assert type(model).__name__ == "GPT2LMHeadModel"


def test_without_model_type_the_class_names_its_config(tmp_path):
    fields = {k: v for k, v in SMALL["BertForSequenceClassification"].items() if k != "model_type"}
    model = build_from_config(_write(tmp_path, "BertForSequenceClassification", fields))
    assert type(model.config).__name__ == "BertConfig"
    assert unique_params(model) == unique_params(
        _direct("BertForSequenceClassification", SMALL["BertForSequenceClassification"])
    )


def test_the_hub_is_offline_and_transformers_quiet_while_a_model_is_built(tmp_path, monkeypatch, capfd):
    import huggingface_hub.constants as hub
    import transformers

    seen = []
    real = transformers.LlamaForCausalLM.post_init

    def post_init(self):
        seen.append(hub.HF_HUB_OFFLINE)
        return real(self)

    monkeypatch.setattr(transformers.LlamaForCausalLM, "post_init", post_init)
    before = hub.HF_HUB_OFFLINE
    fields = {
        **SMALL["LlamaForCausalLM"],
        "torch_dtype": "bfloat16",
        "_attn_implementation": "flash_attention_2",
    }
    build_from_config(_write(tmp_path, "LlamaForCausalLM", fields))
    assert seen == [True] and hub.HF_HUB_OFFLINE == before
    assert capfd.readouterr().err == ""  # no deprecation notes from transformers


def test_a_real_device_build_is_seeded(tmp_path):
    path = _write(tmp_path, "LlamaForCausalLM", SMALL["LlamaForCausalLM"])
    a = build_model(str(path), {}, device="cpu", init_seed=0)
    b = build_model(str(path), {}, device="cpu", init_seed=0)
    c = build_model(str(path), {}, device="cpu", init_seed=1)
    assert not any(p.is_meta for p in a.parameters())
    weight = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(a.state_dict()[weight], b.state_dict()[weight])
    assert not torch.equal(a.state_dict()[weight], c.state_dict()[weight])


def test_inside_a_fake_tensor_mode_a_cpu_build_stays_fake_and_unallocated(tmp_path):
    """How a shape-only trace may build a user's model: on the CPU inside a FakeTensorMode."""
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    path = _write(tmp_path, "LlamaForCausalLM", {**LLAMA3, "num_hidden_layers": 2})
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = build_model(str(path), {}, device="cpu")
    assert all(isinstance(p, FakeTensor) for p in model.parameters())
    assert unique_params(model) == 2 * 218_112_000 + 2 * 128256 * 4096 + 4096


# -- --model-arg ----------------------------------------------------------------------------------
def test_model_args_replace_config_fields(tmp_path):
    fields = SMALL["LlamaForCausalLM"]
    path = _write(tmp_path, "LlamaForCausalLM", fields)
    model = build_model(str(path), {"num_hidden_layers": 1, "vocab_size": 100})
    assert len(model.model.layers) == 1 and model.config.vocab_size == 100
    assert unique_params(model) == unique_params(
        _direct("LlamaForCausalLM", {**fields, "num_hidden_layers": 1, "vocab_size": 100})
    )
    # a field the file lacks but the class knows, under its common name (GPT-2 calls it n_layer)
    gpt2 = _write(tmp_path, "GPT2LMHeadModel", SMALL["GPT2LMHeadModel"], name="gpt2.json")
    assert len(build_model(str(gpt2), {"num_hidden_layers": 1}).transformer.h) == 1
    # the architecture itself
    bare = build_model(str(path), {"architectures": ["LlamaModel"]})
    assert type(bare).__name__ == "LlamaModel"
    eager = build_model(str(path), {"attn_implementation": "eager"})
    assert eager.config._attn_implementation == "eager"


@pytest.mark.parametrize(
    "args, words",
    [
        ({"num_hidden_layer": 2}, "has no field 'num_hidden_layer'"),
        ({"dtype": "bfloat16"}, "--dtype"),
        ({"attn_implementation": "flash_attention_2"}, "choose sdpa or eager"),
        ({"hidden_size": "wide"}, "LlamaConfig refused it"),
        ({"hidden_size": 30}, "LlamaConfig refused it"),  # not a multiple of the 4 heads
    ],
)
def test_bad_model_args_are_one_line(tmp_path, args, words):
    path = _write(tmp_path, "LlamaForCausalLM", SMALL["LlamaForCausalLM"])
    with pytest.raises(UsageError) as excinfo:
        build_model(str(path), args)
    assert words in _refused(excinfo, path)


# -- refusals: each one line naming the file ------------------------------------------------------
def _bad_files():
    llama = {"architectures": ["LlamaForCausalLM"], **SMALL["LlamaForCausalLM"]}
    return {
        "not-an-object": ("[1, 2]", "holds a JSON list, not an object"),
        "bad-json": (
            '{\n  "architectures": ["LlamaForCausalLM"],\n  "x": }',
            "is not JSON: Expecting value at line 3 column 8",
        ),
        "empty": ("", "is empty"),
        "not-utf8": (b'{"a": "\xff"}', "is not UTF-8"),
        "no-architectures": (json.dumps(SMALL["LlamaForCausalLM"]), "has no 'architectures' list"),
        "architectures-not-a-list": (
            json.dumps({**llama, "architectures": "LlamaForCausalLM"}),
            "'architectures' must be a list of class names, not a string",
        ),
        "architectures-empty": (json.dumps({**llama, "architectures": []}), "'architectures' is empty"),
        "unknown-architecture": (
            json.dumps({**llama, "architectures": ["LlamaForTelepathy"]}),
            "has no model class 'LlamaForTelepathy'",
        ),
        "remote-code": (
            json.dumps({**llama, "architectures": ["MyModel"], "auto_map": {"AutoModel": "m.MyModel"}}),
            "remote code, which resnet-trace never runs",
        ),
        "not-a-model-class": (
            json.dumps({**llama, "architectures": ["AutoConfig"]}),
            "is not a transformers model class",
        ),
        "unknown-model-type": (
            json.dumps({**llama, "model_type": "llamalike"}),
            "knows no model_type 'llamalike'",
        ),
        "mismatched-model-type": (
            json.dumps({**llama, "model_type": "bert"}),
            "LlamaForCausalLM takes a LlamaConfig, but model_type 'bert' makes a BertConfig",
        ),
        "bad-field": (json.dumps({**llama, "num_attention_heads": 5}), "LlamaConfig refused it"),
    }


@pytest.mark.parametrize("case", list(_bad_files()))
def test_a_bad_config_is_refused_in_one_line(tmp_path, case):
    content, words = _bad_files()[case]
    path = tmp_path / "config.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(UsageError) as excinfo:
        build_from_config(path)
    assert words in _refused(excinfo, path)


def test_a_config_over_the_size_limit_is_refused_unread(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"architectures": ["LlamaForCausalLM"], "pad": "' + "x" * MAX_CONFIG_BYTES + '"}')
    with pytest.raises(UsageError) as excinfo:
        build_from_config(path)
    assert "more than a config's limit" in _refused(excinfo, path)


def test_a_missing_file_a_folder_without_config_and_a_fifo_are_refused(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(UsageError) as excinfo:
        build_from_config(missing)
    assert "does not exist" in _refused(excinfo, missing)
    with pytest.raises(UsageError) as excinfo:
        build_model(str(tmp_path), {})
    assert "does not exist" in _refused(excinfo, tmp_path / "config.json")
    import os

    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(UsageError) as excinfo:
        build_from_config(fifo)
    assert "FIFO" in _refused(excinfo, fifo)


def test_without_transformers_the_install_line(tmp_path, monkeypatch):
    path = _write(tmp_path, "LlamaForCausalLM", SMALL["LlamaForCausalLM"])
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(UsageError) as excinfo:
        build_model(str(path), {})
    message = _refused(excinfo, path)
    assert (
        message
        == f"--model {str(path)!r} needs the transformers package: pip install 'resnet-trace[transformers]'"
    )


# -- example inputs -------------------------------------------------------------------------------
def test_example_inputs_follow_the_main_input(tmp_path):
    def built(arch, fields, name):
        return build_from_config(_write(tmp_path, arch, fields, name=name))

    llama = built("LlamaForCausalLM", SMALL["LlamaForCausalLM"], "llama.json")
    assert example_inputs(llama) == [("input_ids", (1, 128), "int64")]
    gpt2 = built("GPT2LMHeadModel", SMALL["GPT2LMHeadModel"], "gpt2.json")  # n_positions 64 caps it
    assert example_inputs(gpt2) == [("input_ids", (1, 64), "int64")]
    t5 = built("T5ForConditionalGeneration", SMALL["T5ForConditionalGeneration"], "t5.json")
    assert example_inputs(t5) == [("input_ids", (1, 128), "int64"), ("decoder_input_ids", (1, 16), "int64")]
    vit = {"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4}
    vit |= {"intermediate_size": 64, "image_size": 32, "patch_size": 8, "num_channels": 1}
    assert example_inputs(built("ViTForImageClassification", vit, "vit.json")) == [
        ("pixel_values", (1, 1, 32, 32), "float32")
    ]
    whisper = {"model_type": "whisper", "d_model": 32, "encoder_layers": 1, "decoder_layers": 1}
    whisper |= {"encoder_attention_heads": 4, "decoder_attention_heads": 4, "num_mel_bins": 80}
    assert example_inputs(built("WhisperForConditionalGeneration", whisper, "whisper.json")) == [
        ("input_features", (1, 80, 3000), "float32"),
        ("decoder_input_ids", (1, 16), "int64"),
    ]
    w2v = {"model_type": "wav2vec2", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4}
    w2v |= {"intermediate_size": 64, "vocab_size": 32}
    assert example_inputs(built("Wav2Vec2ForCTC", w2v, "w2v.json")) == [
        ("input_values", (1, 16000), "float32")
    ]


def test_example_inputs_run_a_real_forward(tmp_path):
    """The default input is one the model takes: a CPU forward of each small config."""
    for arch, fields in SMALL.items():
        model = build_from_config(
            _write(tmp_path, arch, fields, name=f"{arch}.json"), device="cpu", init_seed=0
        )
        model.eval()
        feed = {
            name: torch.zeros(shape, dtype=torch.int64) if dtype == "int64" else torch.zeros(shape)
            for name, shape, dtype in example_inputs(model)
        }
        with torch.no_grad():
            out = model(**feed)
        assert out.logits.shape[0] == 1, arch


# -- the CLI: refusals, exit 2, one line, no traceback --------------------------------------------
@pytest.mark.parametrize("command", ["summary", "tree"])
def test_cli_refuses_a_bad_config_in_one_line(cli, tmp_path, command):
    path = _write(tmp_path, None, SMALL["LlamaForCausalLM"])
    result = cli(command, "--model", path, code=2)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "has no 'architectures' list" in result.stderr and str(path) in result.stderr


def test_cli_refuses_a_bad_model_arg_and_a_missing_folder_config(cli, tmp_path):
    path = _write(tmp_path, "LlamaForCausalLM", SMALL["LlamaForCausalLM"])
    result = cli("summary", "--model", path, "--model-arg", "num_hidden_layer=2", code=2)
    assert result.stderr.count("\n") == 1 and "has no field 'num_hidden_layer'" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("summary", "--model", empty, code=2)
    assert result.stderr.count("\n") == 1 and "config.json" in result.stderr


def test_cli_without_transformers_says_how_to_install(cli, tmp_path, monkeypatch):
    path = _write(tmp_path, "LlamaForCausalLM", SMALL["LlamaForCausalLM"])
    monkeypatch.setitem(sys.modules, "transformers", None)
    result = cli("summary", "--model", path, code=2)
    assert result.stderr.count("\n") == 1
    assert "pip install 'resnet-trace[transformers]'" in result.stderr


@pytest.mark.parametrize("command", ["summary", "graph", "tree"])
@pytest.mark.parametrize("as_folder", [False, True], ids=["file", "folder"])
def test_cli_output_naming_the_config_is_refused(cli, tmp_path, command, as_folder):
    path = _write(tmp_path, "LlamaForCausalLM", SMALL["LlamaForCausalLM"])
    before = path.read_bytes()
    ref = tmp_path if as_folder else path
    result = cli(command, "--model", ref, "-o", path, code=2)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "would replace" in result.stderr
    assert path.read_bytes() == before


def test_model_file_names_the_config_a_reference_reads(tmp_path):
    from resnet_trace.cli.files import model_file

    assert model_file(str(tmp_path)) == tmp_path / "config.json"
    assert model_file("x/llama.json") == type(tmp_path)("x/llama.json")
    assert model_file("m.py:Net") == type(tmp_path)("m.py")
    assert model_file("pkg.mod:Net") is None and model_file(None) is None
