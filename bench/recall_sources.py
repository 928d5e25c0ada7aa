"""Where the answer of rt-polarity-recall goes: per layer, the share of the asked review's tokens that
each prefill-pruning method keeps, and (dense model) the share of them among the tokens the last prompt
token attends to most.

rt-polarity-recall asks a decoder to continue, word for word, a review ~800-1,900 tokens back.  Its
answer lives in that review's tokens alone, so a method that drops them loses it whatever else it keeps.
The prompts are the task file's, ending with the cue (as ``generate``'s prefill sees them).

    python bench/recall_sources.py --limit 5 --speedup 2
    python bench/recall_sources.py --methods acc,last-token,gemfilter --filter-layers 7,15
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json

import numpy as np
import torch

import harness
from harness.models.catalog import load_causal_lm
from harness.pruning.methods import PREFILL_STUDY
from harness.runners.lm_eval_bridge import TASKS_DIR
from harness.runners.prompt_suites import build_prompts

_SPEC = importlib.util.spec_from_file_location("offline_data", TASKS_DIR / "offline_data.py")
offline_data = importlib.util.module_from_spec(
    _SPEC
)  # the task files' data hooks, where the harness installed them
_SPEC.loader.exec_module(offline_data)


def prompts(tokenizer, limit: int) -> list[tuple[list[int], torch.Tensor]]:
    """(token ids, bool mask of the asked review's tokens) for the first ``limit`` items, the prompts as
    lm-eval renders them from the task file (``build_prompts``, as ``harness positions`` traces them)."""
    docs = offline_data.rt_polarity_recall()["test"].select(range(limit))
    out = []
    for doc, prompt in zip(docs, build_prompts("rt-polarity-recall", None, limit)):
        start = prompt.text.find(
            f"Review #{doc['review']}: "
        )  # its line in the list, before the cue repeats it
        end = prompt.text.find("\n", start)
        encoded = tokenizer(prompt.text, return_offsets_mapping=True)
        source = torch.tensor([start <= a and b <= end and b > a for a, b in encoded["offset_mapping"]])
        out.append((encoded["input_ids"], source))
    return out


@torch.no_grad()
def kept_share(stock, method: str, speedup: float, items, state: str = "") -> np.ndarray:
    """Per layer, the mean share of the source tokens the pruned model keeps."""
    model = harness.prune(copy.deepcopy(stock), method=method, speedup=speedup, method_state=state)
    shares = []
    for ids, source in items:
        model(input_ids=torch.tensor([ids]))
        wanted = set(torch.nonzero(source).flatten().tolist())
        shares.append([len(wanted & set(kept[0])) / len(wanted) for kept in model.last_kept])
    return np.array(shares).mean(axis=0)


@torch.no_grad()
def attended_share(stock, items) -> dict[str, np.ndarray]:
    """Per layer, the share of the source among the top half of tokens by the last token's attention
    (stock eager attention), its heads reduced by the mean (LazyLLM's, GemFilter's) or the max."""
    model = copy.deepcopy(stock)
    model.config._attn_implementation = "eager"
    shares = {"mean": [], "max": []}
    for ids, source in items:
        attentions = model(input_ids=torch.tensor([ids]), output_attentions=True).attentions
        for name, reduce in (("mean", lambda a: a.mean(0)), ("max", lambda a: a.max(0).values)):
            top = [reduce(layer[0, :, -1, :]).topk(len(ids) // 2).indices for layer in attentions]
            shares[name].append([source[t].sum().item() / source.sum().item() for t in top])
    return {name: np.array(rows).mean(axis=0) for name, rows in shares.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(PREFILL_STUDY))
    parser.add_argument("--filter-layers", default="", help="extra gemfilter rows at these filter layers")
    parser.add_argument("--speedup", type=float, default=2.0)
    parser.add_argument("--limit", type=int, default=5)
    args = parser.parse_args(argv)
    loaded = load_causal_lm("smollm2", "pretrained")
    items = prompts(loaded.tokenizer, args.limit)
    rows = [(m, "") for m in args.methods.split(",")]
    rows += [("gemfilter", json.dumps({"filter_layer": int(r)})) for r in args.filter_layers.split(",") if r]
    layers = loaded.model.config.num_hidden_layers
    every = list(range(0, layers, 3)) + [layers - 1]
    print(
        f"smollm2, {args.limit} rt-polarity-recall prompts, speedup {args.speedup:g}: share of the asked review's "
        "tokens kept after each layer"
    )
    print("| method | " + " | ".join(f"L{i}" for i in every) + " |\n|---|" + "---:|" * len(every))
    for method, state in rows:
        share = kept_share(loaded.model, method, args.speedup, items, state)
        name = method + (f" (filter layer {json.loads(state)['filter_layer']})" if state else "")
        print(f"| {name} | " + " | ".join(f"{share[i]:.2f}" for i in every) + " |", flush=True)
    print("\nDense: share of the asked review's tokens among the top half by the last token's attention")
    print("| heads | " + " | ".join(f"L{i}" for i in every) + " |\n|---|" + "---:|" * len(every))
    for name, share in attended_share(loaded.model, items).items():
        print(f"| {name} | " + " | ".join(f"{share[i]:.2f}" for i in every) + " |")


if __name__ == "__main__":
    main()
