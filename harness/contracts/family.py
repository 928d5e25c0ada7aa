"""The family contract: what ``harness.prune`` needs to know to make one architecture latency-adjustable.

A family adapts one architecture (BERT, GPT-2, Llama, ...) to the shared pruning machinery.  The
machinery owns everything that is the same for every family: the layer loop
(``harness.models.stack.run_stack``), scoring and selection (the method), the FLOP model and solver,
and the bookkeeping of what each forward kept.  A family answers the questions only it can answer:

* what it is (``kind``: encoder, decoder or encoder-decoder) and which checkpoints it serves
  (``supports`` for a loaded model, ``model_types`` for a checkpoint's ``config.model_type``);
* where its layer stacks are (``stacks``), how its stock layer is called (``run_layer``) and its drop
  layer (``drop_layer``: the stock layer, but the method keeps ``keep[b]`` word-vectors of sample b
  after self-attention; ``harness.pruning.attention.attend_and_score`` and the method's ``reduce`` do
  the shared part);
* its cost as the FLOP model sees it (``arch_spec``: an ``ArchSpec``, with decoder and cross-attention
  terms for an encoder-decoder) and its longest input (``max_length``);
* how a pruned forward is put in place (``install``: one of the helpers in ``harness.models.stack``)
  and what a latency measurement feeds it (``latency_inputs``: an encoder-decoder also needs decoder
  inputs).

A decoder-only family implements ``DecoderFamily`` below: the hooks the shared causal forward calls
(``embed``, ``rotary``, ``final_norm``, ``output_class``, and the KV cache's ``new_cache`` and
``write_cache``).  ``harness.models.decoder.Decoder`` implements the rest once (the pruned forward,
generation from the pruned cache, the output head on the kept rows), and
``harness.models.decoder.RotaryDecoder`` the Llama layout as well (Llama, Qwen2, Mistral): a new family
of that layout is one module naming its model classes and refusing the configs it cannot match.

Families share code through this contract, ``harness.models.decoder`` and the small helpers in
``harness.models.stack``, never by inheriting from a sibling family.  Register an instance in
``harness.models.FAMILIES`` or declare it in the ``harness.models`` entry-point group.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from harness.contracts.flops import ArchSpec
from harness.registry import HarnessError

KINDS = ("encoder", "decoder", "encoder-decoder")
DEFAULT_PROTOCOL = {"encoder": "finetune", "decoder": "zero-shot", "encoder-decoder": "zero-shot"}
"""The protocol a family's models are evaluated under when ``--protocol`` is not given."""
AUTO_CLASS = {
    "encoder": "AutoModelForSequenceClassification",
    "decoder": "AutoModelForCausalLM",
    "encoder-decoder": "AutoModelForSeq2SeqLM",
}
"""The transformers auto class that builds a family's model from its config (the analytic checks of a
sweep build one on the meta device)."""


@dataclass
class Tokens:
    """The word-vectors entering a layer, packed per sample (kept ones first, padding slots after)."""

    valid: torch.Tensor
    """(B, n) bool: real tokens."""
    positions: torch.Tensor
    """(B, n) long: each token's position in the original input."""
    protected: torch.Tensor
    """(B, n) bool: tokens no layer may drop."""
    weight: torch.Tensor | None = None
    """(B, n) float or None: how many input tokens each word-vector stands for (ToMe's merged sizes) or
    its soft mass (LTP's soft masks while training); attention adds log(weight) to the keys' logits.
    The shared layer loop adds it to the ``LayerCall.bias`` a drop layer gets, so every family that
    passes ``call.bias`` to ``attend_and_score`` attends merged word-vectors alike."""


@dataclass
class LayerCall:
    """What the layers of one forward share: the pruner, and what a stock layer call takes besides
    the hidden states.  ``run_stack`` keeps ``mask`` right for the current tokens; a family keeps its
    own per-token inputs (rotary angles, a relative position bias) right in ``after_drop``."""

    pruner: Any
    """The model's ``harness.pruning.pruner.Pruner``: the method, the generator, the plan."""
    causal: bool
    implementation: str
    """The model's attention implementation ("eager", "sdpa", ...): the form ``mask`` takes."""
    training: bool = False
    mask: Any = None
    rotary: Any = None
    original_rotary: Any = None
    bias: torch.Tensor | None = None
    """An additive attention bias (B|1, H, n, n) for the current tokens (T5's relative positions)."""
    original_bias: torch.Tensor | None = None
    """The bias of the whole input (1, H, n, n), which ``after_drop`` gathers the kept tokens' from."""
    cache: Any = None
    layer_kwargs: dict = field(default_factory=dict)
    """Further keywords the model's own forward hands its stock layers."""


class Family(abc.ABC):
    """One architecture family; registered instances are looked up by ``name`` and by ``supports``."""

    name: ClassVar[str]
    kind: ClassVar[str]
    """One of ``KINDS``."""
    description: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    """``config.model_type`` values whose checkpoints this family prunes (local folders are matched by it)."""
    default_options: ClassVar[dict] = {}
    """Pruning options this family defaults to (``protect_first``, ``protect_last``, ...)."""

    # --- what it is ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def supports(self, model: nn.Module) -> bool:
        """True for the model classes this family can prune."""

    def check(self, model: nn.Module, settings) -> None:
        """Refuse configurations the pruned forward would compute differently from stock.

        The default enforces what every decoder needs: the last token's logits are the output."""
        if self.kind == "decoder" and settings.protect_last < 1:
            raise HarnessError(
                "protect_last must be >= 1 for decoders: the last token's logits are the output"
            )

    @property
    def default_protocol(self) -> str:
        return DEFAULT_PROTOCOL[self.kind]

    @property
    def auto_class(self):
        import transformers

        return getattr(transformers, AUTO_CLASS[self.kind])

    # --- cost -----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def arch_spec(self, model: nn.Module) -> ArchSpec:
        """The architecture as the FLOP model sees it."""

    @abc.abstractmethod
    def max_length(self, model: nn.Module) -> int:
        """The longest input the model takes (reachability of a speedup is judged at this length)."""

    # --- the layers -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def stacks(self, model: nn.Module) -> dict[str, Sequence[nn.Module]]:
        """The layer stacks by role ("encoder", "decoder"); pruning acts on the first one."""

    @abc.abstractmethod
    def run_layer(self, layer: nn.Module, hidden: torch.Tensor, call: LayerCall) -> torch.Tensor:
        """The stock layer on every entering token (no token is dropped in this layer)."""

    @abc.abstractmethod
    def drop_layer(
        self, layer: nn.Module, hidden: torch.Tensor, tokens: Tokens, keep: torch.Tensor, call: LayerCall
    ) -> tuple[torch.Tensor, Tokens]:
        """The layer, keeping ``keep[b]`` word-vectors of sample b after its self-attention.

        Project the heads, call ``attend_and_score`` (``call.bias`` as its bias: it already holds
        log(``tokens.weight``) when word-vectors carry weights), let ``call.pruner.method.reduce`` pick
        the kept word-vectors, then run the output projection and the feed-forward network on them
        only.  Returns their hidden states and ``Tokens``."""

    def single_token_layer(self, layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor | None:
        """The layer on one word-vector per sample, where a cheaper form exists (None: the stock call)."""
        return None

    def after_drop(self, call: LayerCall, tokens: Tokens) -> None:
        """Bring per-token layer inputs other than the mask (rotary angles, a bias) to the kept tokens."""

    # --- putting it in place ----------------------------------------------------------------------------
    @abc.abstractmethod
    def install(self, model: nn.Module, pruner) -> None:
        """Route the model's forward through the pruned one (``harness.models.stack.install``)."""

    def output_head(self, model: nn.Module) -> nn.Module | None:
        """A head applied to every output row, to run on the kept rows only (a decoder's LM head)."""
        return None

    def latency_inputs(self, model: nn.Module, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """The forward's inputs for a latency measurement on ``input_ids`` (no padding).

        An encoder-decoder adds its decoder inputs here (e.g. one decoder start token per row)."""
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


class DecoderFamily(Family):
    """A decoder-only family: the pieces of one architecture that the shared causal forward
    (``harness.models.decoder``) cannot know.  Subclass ``harness.models.decoder.Decoder``, which
    implements the rest of ``Family`` for decoders, or ``RotaryDecoder`` for the Llama layout.

    Why hooks and not a copied forward: generation from a pruned prefill (each layer's cache holds the
    tokens that entered it, decoding steps mask each layer's cache on its own), the output head on the
    kept rows only and the KV-cache keyword of the installed transformers are the same for every
    decoder, and a copy of them per family is a copy that drifts."""

    kind: ClassVar[str] = "decoder"
    classes: ClassVar[tuple[type, ...]] = ()
    """The model classes this family prunes (the base model and its heads)."""
    output_class: ClassVar[type]
    """The class the base model's stock forward returns (``BaseModelOutputWithPast``, ...): the heads
    read ``last_hidden_state`` and the cache from it as from stock."""

    def supports(self, model: nn.Module) -> bool:
        return isinstance(model, self.classes)

    @abc.abstractmethod
    def embed(
        self, base: nn.Module, input_ids, inputs_embeds, position_ids, kwargs: dict, past: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(hidden states entering the first layer, position ids)``.

        Positions default to ``past``, ``past + 1``, ... (``past``: the tokens before these, in a
        decoding step).  Absolute position embeddings are added here (GPT-2), so kept tokens carry
        their original positions with no further work; pop from ``kwargs`` what only this uses."""

    def rotary(self, base: nn.Module, hidden: torch.Tensor, position_ids: torch.Tensor) -> Any:
        """Per-token inputs every layer takes besides the hidden states (rotary cos/sin), or None.

        The forward computes them once for the whole input (``LayerCall.rotary`` and
        ``original_rotary``); ``after_drop`` brings them to the kept tokens' original positions."""
        return None

    @abc.abstractmethod
    def final_norm(self, base: nn.Module) -> nn.Module:
        """The norm after the last layer (applied to the kept rows before they are scattered back)."""

    # --- the KV cache -----------------------------------------------------------------------------------
    def new_cache(self, base: nn.Module) -> Any:
        """The cache a forward starts when asked for one (``use_cache``) and given none.

        It must keep every token a layer writes: the pruned prefill writes each layer's own kept tokens,
        and decoding masks them by ``Rows.cache_valid``.  A cache that trims (sliding windows) or
        offloads cannot hold that layout; refuse such configs in ``check`` instead."""
        from transformers import DynamicCache

        return DynamicCache(config=base.config)

    def write_cache(self, call: LayerCall, index: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """A drop layer stores the keys and values of every token entering layer ``index`` (before any
        is dropped; after rotary, before grouped heads are repeated), as the stock layer would have.

        Stock layers (``run_layer``) write their own through the cache keyword they take."""
        if call.cache is not None:
            call.cache.update(key, value, index)
