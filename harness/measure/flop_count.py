"""Count the FLOPs a forward pass really executes, attention included.

The predicted speedup of a pruned model comes from an analytic FLOP model; ``count_flops`` is the
independent check of that model, so it must not miss work.  torch's FLOP counter has no formula for
``aten._scaled_dot_product_flash_attention_for_cpu`` (what ``F.scaled_dot_product_attention`` runs
on CPU), so without the registration below an SDPA model would silently lose its ``QK^T`` and
``softmax·V`` FLOPs while the eager model of the same architecture kept them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry, register_flop_formula, sdpa_flop_count

_CPU_FLASH_SDPA = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _cpu_flash_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Same count as torch's own SDPA formula: two batched matmuls, masks and softmax not counted."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# Registered once, and only where this torch has the op but no formula for it (a later torch may
# ship its own; registering twice raises).
if _CPU_FLASH_SDPA is not None and _CPU_FLASH_SDPA not in flop_registry:
    register_flop_formula(_CPU_FLASH_SDPA)(_cpu_flash_sdpa_flop)


def count_flops(fn: Callable[[], Any]) -> int:
    """Run ``fn`` once without autograd and return the FLOPs it executed (a multiply-add is 2)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())
