"""Checkpoints load exactly or not at all: a damaged weights header, a config.json of other weights, and a
pruned checkpoint read back through plain transformers' loaders."""

import json
import shutil

import pytest
import torch
from cli_checks import one_line_error, run_args
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForPreTraining,
    BertForSequenceClassification,
    GPT2Config,
    LlamaConfig,
    LlamaForCausalLM,
)

import harness
from harness import cli
from harness.models.catalog import load_causal_lm, load_pretrained_classifier
from harness.registry import HarnessError

QUERY = "encoder.layer.0.attention.self.query.weight"


def copy_of(folder, tmp_path, name="copy"):
    out = tmp_path / name
    shutil.copytree(folder, out)
    return out


def flip_bit_in_name(folder, name: str, index: int = 0) -> str:
    """Flip the lowest bit of the first character of ``name`` in the safetensors header (same length, so
    the file stays readable): the tensor is then missing and a stranger unexpected. Returns the new name."""
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    size = int.from_bytes(data[:8], "little")
    header = data[8 : 8 + size].decode()
    start = header.index(name)
    flipped = name[:index] + chr(ord(name[index]) ^ 1) + name[index + 1 :]
    data[8 : 8 + size] = (header[:start] + flipped + header[start + len(name) :]).encode()
    path.write_bytes(bytes(data))
    return flipped


def refused(load) -> str:
    with pytest.raises(HarnessError) as caught:
        load()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_renamed_body_tensor_is_refused_everywhere(tiny_checkpoint, tmp_path):
    folder = copy_of(tiny_checkpoint, tmp_path)
    stranger = flip_bit_in_name(folder, "bert." + QUERY, index=len("bert.encoder.layer.0.attention.self."))
    for load in (
        lambda: load_pretrained_classifier(str(folder), f"local folder {folder}", 2),
        lambda: harness.from_pretrained(str(folder)),
    ):
        message = refused(load)
        assert str(folder) in message and "bert." + QUERY in message and stranger in message
        assert "1 tensor missing" in message and "1 unexpected" in message


def test_a_renamed_decoder_tensor_is_refused(tiny_gpt2_checkpoint, tmp_path):
    folder = copy_of(tiny_gpt2_checkpoint, tmp_path)
    flip_bit_in_name(folder, "transformer.h.3.mlp.c_fc.weight", index=len("transformer.h.3.mlp."))
    message = refused(lambda: load_causal_lm(str(folder), "pretrained"))
    assert "transformer.h.3.mlp.c_fc.weight" in message


def test_a_fresh_head_and_unused_pretraining_heads_are_allowed(tiny_checkpoint, tmp_path):
    """A base checkpoint (bare encoder, or BERT with its pre-training heads cls.*), or another task's
    classifier (3 labels), becomes a 2-label classifier: only the head is new, the body is the file's."""
    body = BertForSequenceClassification.from_pretrained(tiny_checkpoint).bert
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    builders = {
        "bare": lambda: body,
        "pretraining": lambda: BertForPreTraining(BertConfig(**config)),
        "three-labels": lambda: BertForSequenceClassification(BertConfig(**{**config, "num_labels": 3})),
    }
    for name, build in builders.items():
        folder = copy_of(tiny_checkpoint, tmp_path, name)
        (folder / "model.safetensors").unlink()
        model = build()
        if name != "bare":
            model.bert.load_state_dict(body.state_dict())
        model.save_pretrained(folder)
        loaded = load_pretrained_classifier(str(folder), name, 2).model
        assert loaded.classifier.out_features == 2
        assert torch.equal(
            loaded.bert.encoder.layer[5].output.dense.weight, body.encoder.layer[5].output.dense.weight
        )


def test_a_headless_body_for_harness_from_pretrained_is_refused(tiny_checkpoint, tmp_path):
    """harness.from_pretrained loads the checkpoint's own architecture: nothing may be new, not even a head."""
    folder = copy_of(tiny_checkpoint, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "model.safetensors").unlink()
    BertForSequenceClassification.from_pretrained(tiny_checkpoint).bert.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config))  # still names BertForSequenceClassification
    assert "classifier.weight" in refused(lambda: harness.from_pretrained(str(folder)))


def test_extra_layers_are_refused_stale_buffers_are_not(tiny_gpt2_checkpoint, tmp_path):
    """Weights of a layer config.json does not build would be dropped; a buffer old GPT-2 checkpoints
    saved (``attn.masked_bias``, a constant) belongs to a module the model has, and is harmless."""
    from safetensors.torch import load_file, save_file

    folder = copy_of(tiny_gpt2_checkpoint, tmp_path, "stale")
    weights = load_file(folder / "model.safetensors")
    save_file(
        {**weights, "transformer.h.0.attn.masked_bias": torch.tensor(-1e4)},
        folder / "model.safetensors",
        metadata={"format": "pt"},
    )
    load_causal_lm(str(folder), "pretrained")
    folder = copy_of(tiny_gpt2_checkpoint, tmp_path, "fewer-layers")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "n_layer": 5}))
    message = refused(lambda: load_causal_lm(str(folder), "pretrained"))
    assert "unexpected (transformer.h.5." in message


def test_tied_lm_heads_are_not_missing(tiny_gpt2_checkpoint, tmp_path):
    """GPT-2's and a tied Llama's LM head are the embeddings: their files hold no lm_head.weight."""
    loaded = load_causal_lm(
        str(tiny_gpt2_checkpoint), "pretrained"
    ).model  # also drops the classifier's score
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()
    folder = copy_of(tiny_gpt2_checkpoint, tmp_path)
    (folder / "model.safetensors").unlink()
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=json.loads((folder / "config.json").read_text())["vocab_size"],
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
        )
    ).save_pretrained(folder)
    loaded = load_causal_lm(str(folder), "pretrained").model
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()


def gpt2_config_over_bert(tiny_checkpoint, tmp_path):
    folder = copy_of(tiny_checkpoint, tmp_path, "gpt2-config")
    bert = json.loads((folder / "config.json").read_text())
    GPT2Config(
        n_embd=64, n_layer=6, n_head=4, vocab_size=bert["vocab_size"], n_positions=128
    ).save_pretrained(folder)
    return folder


def test_config_of_another_architecture_or_size_is_one_line(tiny_checkpoint, tmp_path):
    folder = gpt2_config_over_bert(tiny_checkpoint, tmp_path)
    message = refused(lambda: load_pretrained_classifier(str(folder), f"local folder {folder}", 2))
    assert str(folder) in message and "GPT2ForSequenceClassification" in message
    assert "tensors missing (transformer.h.0." in message and "more" in message
    folder = copy_of(tiny_checkpoint, tmp_path, "narrower")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 32}))
    message = refused(lambda: load_pretrained_classifier(str(folder), f"local folder {folder}", 2))
    assert (
        "of another shape (bert.embeddings.LayerNorm.bias is (64,) in the weights, (32,) in config.json"
        in message
    )
    assert "classifier" not in message  # the head is new anyway: only the body's shapes are the news
    folder = copy_of(tiny_checkpoint, tmp_path, "indivisible")
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 65}))
    assert "cannot build" in refused(
        lambda: load_pretrained_classifier(str(folder), f"local folder {folder}", 2)
    )


def test_config_of_another_architecture_exits_2_through_the_cli(
    tiny_checkpoint, tiny_sentiment_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    folder = gpt2_config_over_bert(tiny_checkpoint, tmp_path)
    code = cli.main(
        run_args(
            folder,
            tiny_sentiment_dir,
            "--methods",
            "acc",
            "--protocol",
            "finetune",
            out=str(tmp_path / "out"),
            speedups="1",
        )
    )
    err = one_line_error(capsys, code)
    assert str(folder) in err and "GPT2ForSequenceClassification" in err


def test_a_pruned_checkpoint_loads_pruned_through_plain_transformers(tiny_classifier, padded_batch, tmp_path):
    """Once harness is imported, transformers' own loaders (Auto classes, the class itself) restore the
    pruning settings a pruned model saved, so a pruned checkpoint never silently runs dense."""
    model = harness.prune(tiny_classifier(), method="acc", speedup=2.5, profile="geometric")
    ids, mask = padded_batch
    expected = model(ids, attention_mask=mask).logits
    model.save_pretrained(tmp_path)
    auto, info = AutoModelForSequenceClassification.from_pretrained(tmp_path, output_loading_info=True)
    for loaded in (auto, BertForSequenceClassification.from_pretrained(tmp_path)):
        assert loaded.pruning == model.pruning
        assert torch.allclose(loaded(ids, attention_mask=mask).logits, expected, atol=1e-6)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    dense = tiny_classifier()
    dense.save_pretrained(tmp_path / "dense")
    assert not hasattr(BertForSequenceClassification.from_pretrained(tmp_path / "dense"), "pruning")
