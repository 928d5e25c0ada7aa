"""Offline tuning of generative models (``--protocol finetune-lm``): a decoder or an encoder-decoder is
fine-tuned *under elimination*, so that afterwards the same weights run at any speedup.

Each training example is a context and a continuation (``Example``), the shape of an lm-eval
loglikelihood request.  Every step draws a speedup (``loop.draw_speedup``, as the classifier loop does)
and runs the sandwich rule on the batch:

* the dense pass (speedup 1) learns the continuation's next-token loss;
* the pruned pass (the drawn speedup) learns from the dense pass's logits on the same continuation
  (distillation, ``recipes.distillation``; ``distill=False``: the next-token loss instead), so plain
  text needs no labels and the dense model stays what it was.

What is pruned is what inference prunes:

* a decoder runs each example as lm-eval scores it: context + continuation, left-truncated to
  ``max_length + 1`` tokens, the last token dropped, under ``protect_tail(len(continuation))``, so the
  continuation's tokens are kept in every layer (never eliminated) and do not vote in the scores, and
  only the context is pruned, exactly as the prefill prunes it.  Examples run one forward each and their
  gradients add up over the batch: the tails sit at different positions, and one forward per example
  keeps the LM head on the continuation rows only (``logits_to_keep``).  On a GPU that is the slower
  choice; on the CPU it costs little, the matmuls being large already.
* an encoder-decoder's encoder reads the context, pruned at the drawn speedup, and its decoder is
  trained on the continuation (teacher forcing); batches are padded.

Targets are encoded without special tokens, as lm-eval scores them (no end-of-sequence token is learned).
``lora`` > 0 trains LoRA adapters of that rank on every linear layer but the output head (through
``peft``), merged into the weights afterwards, so that the tuned model saves and loads as a plain model.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from harness.pruning.methods.recipes import distillation
from harness.registry import HarnessError
from harness.training.loop import draw_speedup, run_steps


@dataclass(frozen=True)
class Example:
    """One training example: the model reads ``context`` (pruned) and learns ``continuation``."""

    context: str
    continuation: str


@dataclass(frozen=True)
class LMTrainSettings:
    steps: int = 100
    """Optimizer steps (each one a dense and a pruned pass over ``batch_size`` examples)."""
    batch_size: int = 8
    learning_rate: float = 2e-5
    max_length: int = 256
    """Tokens of context + continuation per example (left-truncated, as lm-eval truncates)."""
    speedup_range: tuple[float, float] = (1.0, 4.0)
    method: str = "acc"
    distill: bool = True
    lora: int = 0
    """LoRA rank; 0: full fine-tuning (the default for small models)."""
    warmup_ratio: float = 0.06
    weight_decay: float = 0.0
    seed: int = 0


def check_lm_settings(settings: LMTrainSettings) -> None:
    """One line for settings that cannot train."""
    if settings.steps < 1:
        raise HarnessError(f"--train-steps must be a whole number >= 1, got {settings.steps}")
    if settings.max_length < 2:
        raise HarnessError(f"--train-length must be a whole number >= 2, got {settings.max_length}")
    if settings.lora < 0:
        raise HarnessError(f"--lora must be a LoRA rank >= 1 (or 0: full fine-tuning), got {settings.lora}")
    if settings.lora:
        try:
            import peft  # noqa: F401
        except ImportError:
            raise HarnessError("--lora needs the peft package (pip install peft)") from None


# --- encoding ------------------------------------------------------------------------------------------


def encode_pair(tokenizer, example: Example, max_length: int) -> tuple[list[int], int]:
    """A decoder's training row as lm-eval's loglikelihood builds it: (context + continuation ids,
    left-truncated to ``max_length + 1``) and the continuation's length in tokens (at least 1).
    Trailing spaces of the context move to the continuation, as ``HFLM._encode_pair`` moves them."""
    context, continuation = example.context, example.continuation
    spaces = len(context) - len(context.rstrip(" "))
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    if not target_ids:
        raise HarnessError(f"a training example has an empty continuation (context {context[:60]!r}...)")
    ids = (context_ids + target_ids)[-(max_length + 1) :]
    return ids, min(len(target_ids), len(ids) - 1)


# --- one pass: continuation logits and targets ---------------------------------------------------------


def _decoder_pass(model, ids: list[int], tail: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """One example's (logits of the continuation's tokens, their ids), the continuation protected."""
    keep = {"logits_to_keep": tail} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    inputs = torch.tensor([ids[:-1]], device=device)
    with model.protect_tail([tail]):
        logits = model(input_ids=inputs, use_cache=False, **keep).logits
    return logits[0, -tail:], torch.tensor(ids[-tail:], device=device)


def _seq2seq_pass(model, tokenizer, batch: Sequence[Example], max_length: int, device):
    """The batch's decoder logits on the targets' tokens and those ids (the encoder pruned)."""
    encoded = tokenizer(
        [e.context for e in batch], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
    ).to(device)
    targets = tokenizer(
        [e.continuation for e in batch], add_special_tokens=False, padding=True, return_tensors="pt"
    ).to(device)
    labels = targets["input_ids"].masked_fill(targets["attention_mask"] == 0, -100)
    logits = model(**encoded, labels=labels).logits
    scored = labels != -100
    return logits[scored], labels[scored]


# --- the loop ------------------------------------------------------------------------------------------


def tune_lm(loaded, examples: Sequence[Example], settings: LMTrainSettings, kind: str, progress: bool = True):
    """Fine-tune ``loaded.model`` (pruned) in place under elimination; returns the model to save (the same
    one, LoRA merged).  ``kind``: the family's kind, "decoder" or "encoder-decoder"."""
    if not examples:
        raise HarnessError("no training examples: --train-on named no rows")
    check_lm_settings(settings)
    model, tokenizer = loaded.model, loaded.tokenizer
    device = next(model.parameters()).device
    wrapped = _with_lora(model, settings.lora) if settings.lora else None
    decoder = kind == "decoder"
    rows = [encode_pair(tokenizer, e, settings.max_length) for e in examples] if decoder else None
    torch.manual_seed(settings.seed)
    top = min(settings.speedup_range[1], model.max_speedup())
    draw = functools.partial(draw_speedup, "uniform", low=min(settings.speedup_range[0], top), top=top)
    params = [p for p in model.parameters() if p.requires_grad]

    def step(batch: list[int]) -> float:
        drawn = model.pruning.speedup  # the loop's draw; the sandwich's dense half runs at 1
        if decoder:  # one forward per example: each one's tail sits at its own position
            tokens = sum(rows[i][1] for i in batch)
            passes = [lambda i=i: _decoder_pass(model, *rows[i], device) for i in batch]
        else:
            tokens, chunk = None, [examples[i] for i in batch]
            passes = [lambda: _seq2seq_pass(model, tokenizer, chunk, settings.max_length, device)]
        return sum(_sandwich(model, run, drawn, settings.distill, tokens) for run in passes)

    run_steps(
        model,
        [{"params": params}],
        settings,
        len(examples),
        settings.steps,
        draw,
        step,
        "tune (finetune-lm)",
        progress,
    )
    model.eval()
    model.set_speedup(1.0)
    return wrapped.merge_and_unload() if wrapped is not None else model


def _sandwich(model, run, drawn: float, distill: bool, tokens: int | None) -> float:
    """Backward of the sandwich loss of one pass's tokens (the dense pass's next-token loss, and the
    pruned pass's distillation from it), each token weighing 1/``tokens`` (None: this pass's count);
    returns its value."""
    model.set_speedup(1.0)
    logits, targets = run()
    weight = len(targets) / (tokens or len(targets))
    dense = torch.nn.functional.cross_entropy(logits.float(), targets) * weight
    dense.backward()
    teacher = logits.detach().float()
    model.set_speedup(drawn)
    logits, _ = run()
    if distill:
        pruned = distillation(logits.float(), teacher) * weight
    else:
        pruned = torch.nn.functional.cross_entropy(logits.float(), targets) * weight
    pruned.backward()
    return dense.item() + pruned.item()


def _with_lora(model, rank: int):
    """Inject LoRA adapters of ``rank`` into ``model`` in place (every linear layer but the output head;
    the rest frozen) and return the peft wrapper that merges them back."""
    import peft

    config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear")
    with warnings.catch_warnings():  # peft reads transformers' deprecated is_gradient_checkpointing
        warnings.simplefilter("ignore", FutureWarning)
        return peft.get_peft_model(model, config)
