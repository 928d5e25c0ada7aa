"""Names that moved inside transformers 5.x, resolved once for the installed release.

transformers renamed the KV-cache argument of model and layer forwards, of the mask helpers and of the
output classes from ``past_key_values`` to ``cache`` during 5.x (5.24 accepts the old name with a
FutureWarning, and its ``generate`` passes the new one).  A pruned forward that only knew one name would
either miss the cache ``generate`` hands it (and silently start a new one every step) or make every
forward print a deprecation warning.  So the harness asks the installed release which name it uses, by
signature, never by version number: that holds for every 5.x release the pyproject range allows.
"""

from __future__ import annotations

import dataclasses
import inspect

from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast

CACHE_KEYWORD = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"
"""The keyword stock forwards and mask helpers take the KV cache under, in the installed transformers."""

_OLD_NAMES = ("past_key_values", "cache")
_OUTPUT_FIELD = next(
    name for name in _OLD_NAMES if name in {f.name for f in dataclasses.fields(BaseModelOutputWithPast)}
)


def pop_cache(kwargs: dict):
    """The cache passed under either name (removed from ``kwargs``), or None.

    Callers may use the old name (lm-eval, user code) while ``generate`` uses the new one; both mean the
    same object, and a forward must see it whichever name carried it.
    """
    found = [kwargs.pop(name) for name in _OLD_NAMES if name in kwargs]
    found = [value for value in found if value is not None]
    return found[0] if found else None


def cache_kwargs(cache) -> dict:
    """``{keyword: cache}`` for calling a stock layer or mask helper of the installed release."""
    return {CACHE_KEYWORD: cache}


def output_cache_kwargs(cache) -> dict:
    """``{field: cache}`` for building a stock output class of the installed release."""
    return {_OUTPUT_FIELD: cache}


def output_cache(output):
    """The cache an output carries, read under the installed release's field name (no warning)."""
    return getattr(output, _OUTPUT_FIELD)
