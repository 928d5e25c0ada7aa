"""Self-attention that also scores the word-vectors entering a layer, for the layers that drop some.

Family-agnostic: adapters hand over the projected heads (B, H, n, d) and get back the context and
one score per token.  Methods that read attention (ACC) get the attention each token *receives*: the
sum over valid queries of P[h, i, j], per head and its mean over heads, with the diagonal P[h, j, j]
(PoWER-BERT leaves a token's attention to itself out) and the values (ACC-vnorm weighs by their
norm).  It is accumulated block by block (a few samples, or a few dozen query rows, at a time: 2 MB of
probabilities), so the probabilities never exist as one
(B, H, n, n) tensor: at long sequences that tensor's memory traffic, not its arithmetic, would set the
layer's time.  Without autograd the softmax and the context product write in place, for the same
reason.  Blocking changes no result (every sum is per sample), and the products are the same ones a
full attention computes.  Methods that do not read attention use the fused kernel; those that read
only the last query's row ("last-query": LazyLLM-style, GemFilter) use it too, plus one q·Kᵀ row per
sample (``last_query_probs``), never the whole map.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.contracts.method import Method, ScoreInputs

BLOCK_BYTES = 2 << 20
"""Attention probabilities materialised at once (per block of samples and query rows): small enough
to stay in a core's cache between the products and the softmax that read it."""


def allowed_keys(valid: torch.Tensor, causal: bool) -> torch.Tensor | None:
    """(B, 1, n|1, n) bool, True where query i may attend key j; None when nothing is masked.

    Kept tokens keep their original order and padding slots sit after the real tokens, so causality
    among kept tokens is the lower triangle of their packed order.
    """
    if causal:
        order = torch.arange(valid.shape[1], device=valid.device)
        return valid[:, None, None, :] & (order[None, :] <= order[:, None])
    return None if bool(valid.all()) else valid[:, None, None, :]


def for_implementation(
    mask: torch.Tensor | None, like: torch.Tensor, implementation: str
) -> torch.Tensor | None:
    """A boolean (B, 1, q, k) mask in the form a stock layer's attention takes (eager: additive floats)."""
    if mask is None or implementation != "eager":
        return mask
    return torch.zeros(mask.shape, dtype=like.dtype, device=like.device).masked_fill(
        ~mask, torch.finfo(like.dtype).min
    )


def fused_causal(valid: torch.Tensor, causal: bool, queries: int, keys: int) -> bool:
    """Causal attention the fused kernel can do with no mask (``is_causal``): no padding, and queries and
    keys the same tokens (a prefill from an empty cache).  Kept tokens keep their order, so causality
    among them is the lower triangle of their packed order, which is what ``is_causal`` applies."""
    return causal and queries == keys and bool(valid.all())


def layer_mask(valid: torch.Tensor, causal: bool, like: torch.Tensor, implementation: str):
    """The mask a stock layer takes for the packed kept tokens of a forward from an empty cache: None
    where the stock attention needs none, so that it runs the kernel the stock forward runs
    (bidirectional without padding; causal without padding under ``sdpa``, which then applies
    causality itself).  Why: GPU flash-attention kernels take ``is_causal`` but no explicit mask, so an
    explicit lower triangle sends the pruned layers to a slower kernel than the dense ones use.  On
    this 2-core CPU it made no measurable difference (smollm2, 1,024-token prefill, fused vs explicit
    interleaved in one process: within ±3% for truncation, gemfilter and acc at 2x and 4x)."""
    if implementation == "sdpa" and fused_causal(valid, causal, valid.shape[1], valid.shape[1]):
        return None
    return for_implementation(allowed_keys(valid, causal), like, implementation)


def _with_bias(
    mask: torch.Tensor | None, bias: torch.Tensor | None, like: torch.Tensor
) -> torch.Tensor | None:
    """The fused kernel's ``attn_mask``: the boolean mask, or the bias with masked keys at -inf."""
    if bias is None:
        return mask
    bias = bias.to(like.dtype)
    return bias if mask is None else bias.masked_fill(~mask, torch.finfo(like.dtype).min)


def with_weight(bias: torch.Tensor | None, weight: torch.Tensor | None) -> torch.Tensor | None:
    """``bias`` plus log(weight) on every key: a word-vector standing for s merged tokens (ToMe) is
    attended as s copies would be, and one with soft mass m (LTP while training) as m of one."""
    if weight is None:
        return bias
    log_weight = weight.clamp_min(1e-6).log()[:, None, None, :]
    return log_weight if bias is None else bias + log_weight


def _bias_rows(bias: torch.Tensor, samples: slice, rows: slice) -> torch.Tensor:
    """The bias of a block of samples and query rows.  A dimension of size 1 broadcasts: one bias for
    every sample, or one row for every query (log(weight) belongs to the key alone), which slicing
    past its first row would otherwise empty."""
    return bias[samples if bias.shape[0] > 1 else slice(None), :, rows if bias.shape[2] > 1 else slice(None)]


def last_query_probs(
    query, key, valid, queries, scaling: float, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, H, n): softmax over the keys it sees of each sample's last scoring query's logits.

    The last scoring query (the last of ``queries``: the valid tokens, less any answer tokens) sees the
    valid keys up to itself: the tokens are in causal order, and those after it are padding or answer
    tokens (``ScoreInputs.queries``).  The cost is one (1 × d) @ (d × n) product per head, 1/n of the
    score product."""
    batch, _, n, _ = query.shape
    order = torch.arange(1, n + 1, device=valid.device)
    last = (queries.long() * order).argmax(dim=1)  # index of the last scoring query
    rows = torch.arange(batch, device=query.device)
    logits = torch.einsum("bhd,bhnd->bhn", query[rows, :, last], key) * scaling
    if bias is not None:
        # a bias with one row for every query (log(weight) belongs to the key alone) has no row ``last``
        row = bias[:, :, 0] if bias.shape[2] == 1 else bias[rows if bias.shape[0] > 1 else 0, :, last]
        logits = logits + row.reshape(-1, bias.shape[1], n)
    seen = valid & (order[None, :] <= last[:, None] + 1)
    logits = logits.masked_fill(~seen[:, None, :], torch.finfo(logits.dtype).min)
    return logits.softmax(dim=-1)


def attend_and_score(
    query,
    key,
    value,
    valid,
    positions,
    method: Method,
    *,
    scaling: float,
    dropout: float = 0.0,
    generator: torch.Generator | None = None,
    causal: bool = False,
    bias: torch.Tensor | None = None,
    queries: torch.Tensor | None = None,
):
    """``(context (B, H, n, d), scores (B, n))`` of one attention layer over the valid keys.

    ``bias``: an additive (B|1, H|1, n, n) term on the attention logits (T5's relative position bias).
    ``queries``: (B, n) bool, the queries scores may read (``ScoreInputs.queries``); None: every valid one.
    """
    keys = key if method.needs == "keys" else None
    scoring = valid if queries is None else queries
    if not method.needs_attention:
        fused = bias is None and fused_causal(valid, causal, query.shape[2], key.shape[2])
        context = nn.functional.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=None if fused else _with_bias(allowed_keys(valid, causal), bias, query),
            dropout_p=dropout,
            scale=scaling,
            is_causal=fused,
        )
        last = (
            last_query_probs(query, key, valid, scoring, scaling, bias)
            if method.needs == "last-query"
            else None
        )
        return context, method.score(
            ScoreInputs(
                valid, positions, None, generator, causal, keys=keys, last_query=last, queries=queries
            )
        )
    mask = allowed_keys(valid, causal)
    batch, heads, n, _ = query.shape
    row_bytes = heads * n * query.element_size()
    samples = max(1, BLOCK_BYTES // (row_bytes * n))
    rows = n if samples > 1 else max(1, BLOCK_BYTES // row_bytes)
    context = query.new_empty(query.shape)  # contiguous, so whole-row blocks are written in place
    received = query.new_zeros(batch, heads, 1, n)
    diagonal = query.new_zeros(batch, heads, n)
    query_weight = method.query_weights(scoring, causal).to(query.dtype)[:, None, None, :]
    query = query * scaling  # scaled once here rather than on every (rows × n) block of logits
    in_place = not (torch.is_grad_enabled() and query.requires_grad)  # out= cannot be differentiated
    for b in range(0, batch, samples):
        part = slice(b, b + samples)
        for r in range(0, n, rows):
            block = slice(r, r + rows)
            probs = torch.matmul(query[part, :, block], key[part].transpose(-1, -2))
            if bias is not None:
                probs = probs + _bias_rows(bias, part, block)
            if mask is not None:
                probs.masked_fill_(
                    ~mask[part, :, block if causal else slice(None)], torch.finfo(probs.dtype).min
                )
            if in_place:
                torch.softmax(probs, dim=-1, out=probs)
            else:
                probs = probs.softmax(dim=-1)
            attended = nn.functional.dropout(probs, dropout, dropout > 0)
            if in_place and rows == n:
                torch.matmul(attended, value[part], out=context[part])
            else:
                context[part, :, block] = torch.matmul(attended, value[part])
            # sum over valid query rows as a (1 × rows) @ (rows × n) product per head
            received[part] += torch.matmul(query_weight[part, :, :, block], probs)
            own = probs.diagonal(offset=r, dim1=-2, dim2=-1)  # P[h, i, i] for the block's rows i
            diagonal[part, :, r : r + own.shape[-1]] = own
    received_heads = received.view(batch, heads, n)
    inputs = ScoreInputs(
        valid,
        positions,
        None,
        generator,
        causal,
        received_heads.sum(dim=1) / heads,
        keys,
        received_heads=received_heads,
        self_attention=diagonal,
        values=value,
        queries=queries,
    )
    return context, method.score(inputs)
