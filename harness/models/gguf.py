"""GGUF checkpoints from pinned assets, converted once into plain safetensors folders in the harness cache.

Why: the only real decoder weights reachable offline are a Q4_1 GGUF (SmolLM2-135M-Instruct, see
/work/shared/ASSETS.md).  transformers reads GGUF through the ``gguf`` package and dequantises it to
float32, but parsing the file takes about 20 s on every load, and transformers 5 refuses to
``save_pretrained`` a GGUF-loaded model.  So we load it once, copy its state dict into a fresh model built
from the same config without ``quantization_config``, save that with its tokenizer, and check the saved
folder reproduces the GGUF model's logits before it enters the cache.  Afterwards every load is an
ordinary safetensors ``from_pretrained`` that takes a fraction of a second.

Cache entries follow ``harness.assets.cache``: built in a temporary folder and renamed into place, so a
folder under its final name is always complete, and checked against their manifest on every use (sizes and
mtimes, or every sha256 with HARNESS_VERIFY=always); one that `harness cache verify` found damaged is rebuilt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.assets import ASSETS, Asset, asset_path, cache_dir
from harness.assets.cache import build_once
from harness.registry import HarnessError

log = logging.getLogger(__name__)

CHECK_PROMPT = "The quick brown fox jumps over the lazy dog."
TOLERANCE = 1e-4


def converted_folder(asset: Asset, build: Callable[[Path], dict]) -> Path:
    """``cache_dir()/converted/<asset>-<sha12>``, made once by ``build(staging_folder)``; the marker
    records the asset's pin beside what ``build`` returns."""
    target = cache_dir() / "converted" / f"{asset.name}-{asset.sha256[:12]}"
    return build_once(
        target,
        lambda staging: {"asset": asset.requirement, "sha256": asset.sha256, **build(staging)},
        f"converted {asset.name} checkpoint",
    )


def convert_gguf(asset_name: str, member: str) -> Path:
    """A safetensors checkpoint folder (config.json, model.safetensors, tokenizer) of a GGUF asset member."""
    asset = ASSETS.get(asset_name)
    return converted_folder(asset, lambda out: _convert(asset_path(asset, member), out))


def load_gguf(path: Path):
    """The GGUF's model (dequantised to float32, eval mode) and tokenizer, as transformers reads them."""
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def _convert(gguf: Path, out: Path) -> dict:
    log.info("converting %s to a float32 safetensors checkpoint (once; about half a minute)", gguf.name)
    start = time.perf_counter()
    quantised, tokenizer = load_gguf(gguf)
    settings = {k: v for k, v in quantised.config.to_dict().items() if k != "quantization_config"}
    config = type(quantised.config).from_dict(settings)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(quantised.state_dict())
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)
    reloaded = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True).eval()
    batch = tokenizer(CHECK_PROMPT, return_tensors="pt")
    with torch.no_grad():
        difference = (reloaded(**batch).logits - quantised(**batch).logits).abs().max().item()
    if difference > TOLERANCE:
        raise HarnessError(
            f"converting {gguf.name} changed the logits by {difference:.2e} (> {TOLERANCE:g}); "
            f"the GGUF reader of transformers {transformers.__version__} is not supported"
        )
    return {
        "member": gguf.name,
        "transformers": transformers.__version__,
        "max_logit_difference": difference,
        "convert_seconds": round(time.perf_counter() - start, 1),
    }
