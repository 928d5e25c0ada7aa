"""Top-k selection per sample, under the name pruning and model code has always imported it by.

It lives in ``harness.contracts.select``: it is the method contract's default reduction.
"""

from harness.contracts.select import gather_tokens, keep_top, pack_kept

__all__ = ["gather_tokens", "keep_top", "pack_kept"]
