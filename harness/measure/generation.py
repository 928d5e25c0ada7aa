"""Time to first token (TTFT) and decode speed through ``generate``, pruned against stock dense.

A decoder's prefill pruning pays off in what a chat user waits for: the prefill plus the first token.
A bare forward leaves out what ``generate`` adds (the KV cache being filled, the logits processors,
the first sampling step), so TTFT is timed through ``generate`` itself: greedy, KV cache,
``max_new_tokens=1``.  Decode speed comes from a second call that generates ``1 + new_tokens`` tokens
(``min_new_tokens`` keeps an early end-of-sequence from shortening it), timed from inside: a stopping
criterion stamps the clock as each token comes out, and the decode time is the last stamp minus the
first.  Subtracting the two calls' medians instead went negative on a busy 2-core machine, where the
prefill's noise exceeded eight decoding steps.  Decoding prunes nothing, but it attends each layer's
pruned KV cache, so a smaller cache can speed it up too.

The four calls (dense and pruned, first token and all tokens) are meant to be timed interleaved in one
process (``interleaved_latency`` or ``quietest_latency``), so both sides see the same machine; the
sweep and ``bench/bench_decoder.py`` both build them here.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from harness.measure.latency import LatencyStats, _synchronize

DECODE_TOKENS = 8
"""New tokens after the first that the sweep times for decode tokens/s: enough steps for a stable rate,
few enough that a decoder cell's timing stays cheap on a CPU."""


class DecodeClock(StoppingCriteria):
    """Stops nothing; stamps the time each generated token comes out.  ``durations_ms`` holds, per
    ``generate`` call, the time from the first token to the last (the decoding steps)."""

    def __init__(self, device: str):
        self.device, self.stamps, self.durations_ms = device, [], []

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        _synchronize(self.device)
        self.stamps.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def timed(self, call: Callable[[], Any]) -> Callable[[], Any]:
        """``call`` with its decode time recorded."""

        def run():
            self.stamps = []
            out = call()
            self.durations_ms.append(1000.0 * (self.stamps[-1] - self.stamps[0]))
            return out

        return run

    def median_ms(self, last: int) -> float:
        """The median decode time of the last ``last`` calls (the timed rounds, after the warm-up)."""
        return statistics.median(self.durations_ms[-last:])


def pad_id(model) -> int | None:
    """The id ``generate`` pads with: the model's padding token, else its (first) end-of-sequence token.
    Passed explicitly so that ``generate`` does not warn that it picked one itself."""
    config = model.config
    token = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
    return token[0] if isinstance(token, (list, tuple)) else token


def generation_calls(
    model, stock, inputs: dict[str, torch.Tensor], new_tokens: int, device: str = "cpu"
) -> tuple[dict[str, Callable[[], Any]], dict[str, DecodeClock]]:
    """The four timed calls: ``dense_first``/``pruned_first`` (TTFT) and ``dense_all``/``pruned_all``
    (the first token and ``new_tokens`` more), each greedy with the KV cache on the same prompt
    (``inputs``: ``input_ids`` and ``attention_mask``); and the clocks (``dense``, ``pruned``) that time
    the ``_all`` calls' decoding steps."""
    settings = dict(inputs, do_sample=False, use_cache=True, pad_token_id=pad_id(model))
    first = dict(settings, max_new_tokens=1)
    clocks = {"dense": DecodeClock(device), "pruned": DecodeClock(device)}
    full = {
        side: dict(
            settings,
            max_new_tokens=1 + new_tokens,
            min_new_tokens=1 + new_tokens,
            stopping_criteria=StoppingCriteriaList([clocks[side]]),
        )
        for side in clocks
    }
    calls = {
        "dense_first": lambda: stock.generate(**first),
        "pruned_first": lambda: model.generate(**first),
        "dense_all": clocks["dense"].timed(lambda: stock.generate(**full["dense"])),
        "pruned_all": clocks["pruned"].timed(lambda: model.generate(**full["pruned"])),
    }
    return calls, clocks


def generation_speeds(
    timings: dict[str, LatencyStats], clocks: dict[str, DecodeClock], rows: int, new_tokens: int
) -> dict[str, Any]:
    """Row fields from the timings and clocks of ``generation_calls``: TTFT (median, p10, p90) of both
    sides and their ratio, decode tokens/s of both sides (summed over ``rows`` prompts) and their ratio."""
    first, dense_first = timings["pruned_first"], timings["dense_first"]
    rates = {
        side: 1000.0 * rows * new_tokens / clock.median_ms(timings[f"{side}_all"].repeats)
        for side, clock in clocks.items()
    }
    return {
        "ttft_ms": first.median_ms,
        "ttft_p10_ms": first.p10_ms,
        "ttft_p90_ms": first.p90_ms,
        "dense_ttft_ms": dense_first.median_ms,
        "ttft_speedup": dense_first.median_ms / first.median_ms,
        "decode_tokens_per_s": rates["pruned"],
        "dense_decode_tokens_per_s": rates["dense"],
        "decode_speedup": rates["pruned"] / rates["dense"],
        "decode_new_tokens": new_tokens,
        "generation_repeats": first.repeats,
    }
