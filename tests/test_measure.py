"""FLOP counting must agree with the hand formula (attention included), timings must be sane."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import BertConfig, BertModel

import harness
from harness.measure import (
    LatencyStats,
    check_dtype,
    count_flops,
    hardware_fingerprint,
    interleaved_latency,
    latency,
    measure_latency,
    peak_memory_mb,
)
from harness.measure.latency import HostLoad
from harness.registry import HarnessError

D, F_DIM, LAYERS, HEADS, SEQ, BATCH = 32, 64, 2, 4, 16, 2


def _bert(impl: str) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=D,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=F_DIM,
        max_position_embeddings=64,
        attn_implementation=impl,
    )
    return BertModel(config).eval()


def _hand_flops(n: int = SEQ, d: int = D, f: int = F_DIM) -> int:
    per_layer = 2 * n * d * d * 4 + 2 * n * n * d * 2 + 2 * n * d * f * 2
    return BATCH * (LAYERS * per_layer + 2 * d * d)


def _inputs(padded: bool) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 100, (BATCH, SEQ), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    if padded:
        mask[1, SEQ // 2 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("padded", [False, True])
def test_sdpa_and_eager_bert_match_hand_formula(padded: bool) -> None:
    inputs = _inputs(padded)
    models = {impl: _bert(impl) for impl in ("sdpa", "eager")}
    counts = {impl: count_flops(lambda m=m: m(**inputs)) for impl, m in models.items()}
    assert counts["sdpa"] == counts["eager"]
    assert counts["sdpa"] == pytest.approx(_hand_flops(), rel=0.005)


def test_sdpa_math_fallback_is_counted() -> None:
    q = k = v = torch.randn(2, 4, 16, 8)
    mask = torch.ones(2, 1, 16, 16, dtype=torch.bool)
    expected = 2 * 2 * (2 * 4 * 16 * 16 * 8)  # two matmuls, 2 FLOPs per multiply-add
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)) == expected
    with sdpa_kernel(SDPBackend.MATH):
        assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)) == expected


def test_latency_stats_are_ordered() -> None:
    stats = measure_latency(lambda: time.sleep(0.002), warmup=1, repeats=7)
    assert isinstance(stats, LatencyStats) and stats.repeats == 7
    assert 1.5 <= stats.p10_ms <= stats.median_ms <= stats.p90_ms
    assert stats.mean_ms >= 1.5 and stats.std_ms >= 0
    assert set(stats.to_dict()) == {"median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms", "repeats"}


def test_min_time_extends_repeats() -> None:
    stats = measure_latency(lambda: time.sleep(0.001), warmup=0, repeats=2, min_time_s=0.02)
    assert stats.repeats > 2


def test_interleaved_calls_each_fn_round_robin() -> None:
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("dense", "pruned", "other")}
    stats = interleaved_latency(fns, warmup=2, repeats=5, device="cpu")
    assert {name: calls.count(name) for name in fns} == {name: 7 for name in fns}
    assert all(s.repeats == 5 for s in stats.values())
    timed = calls[6:]
    assert all(len(set(timed[i : i + 3])) == 3 for i in range(0, 15, 3))


def test_hardware_fingerprint_keys() -> None:
    info = hardware_fingerprint("cpu")
    for key in (
        "cpu",
        "logical_cores",
        "torch_threads",
        "memory_gb",
        "os",
        "python",
        "torch",
        "transformers",
        "device",
        "id",
    ):
        assert key in info
    assert info["id"].startswith("cpu:") and info["id"].endswith(f":{torch.get_num_threads()}t")
    assert hardware_fingerprint("cpu")["id"] == info["id"]
    assert info["dtype"] == "float32"


def test_dtype_is_in_the_fingerprint_and_its_id() -> None:
    """A bf16 timing is another machine's figure: its id says so; float32 ids stay as before --dtype."""
    info = hardware_fingerprint("cpu", "bfloat16")
    assert info["dtype"] == "bfloat16" and info["id"] == hardware_fingerprint("cpu")["id"] + ":bf16"


def test_dtype_defaults_and_refusals() -> None:
    assert check_dtype(None, "cpu") == "float32" and check_dtype(None, "cuda") == "bfloat16"
    assert check_dtype("bfloat16", "cpu") == "bfloat16"
    with pytest.raises(HarnessError, match="unknown --dtype 'fp8'; valid dtypes: float32, bfloat16, float16"):
        check_dtype("fp8", "cpu")
    with pytest.raises(HarnessError, match="float16 needs a CUDA device.*on cpu use float32 or bfloat16"):
        check_dtype("float16", "cpu")


def test_peak_memory_sees_what_a_call_allocates() -> None:
    assert peak_memory_mb(lambda: torch.ones(50 * 2**20 // 4)) == pytest.approx(50)  # 50 MiB written
    assert peak_memory_mb(lambda: None) == 0


def _bert_pair():
    config = BertConfig(
        hidden_size=64, num_hidden_layers=8, num_attention_heads=4, intermediate_size=128, vocab_size=100
    )
    stock = BertModel._from_config(config, attn_implementation="eager").eval()
    pruned = harness.prune(BertModel._from_config(config, attn_implementation="eager").eval(), speedup=2.0)
    return stock, pruned, torch.randint(5, 100, (16, 512))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_peak_memory_scales_with_the_batch_and_falls_with_pruning(device) -> None:
    """Both devices count the tensors a forward allocates: a quarter of the batch needs a quarter of the
    memory, the same call the same memory, and pruning less (eager attention on both sides, so both hold
    the attention maps; at speedup 2 the first layers keep every token and hold the peak, so the saving is
    small but there)."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("GPU only: needs a CUDA device")
    stock, pruned, ids = (item.to(device) for item in _bert_pair())
    with torch.no_grad():
        whole = peak_memory_mb(lambda: stock(ids), device)
        quarter = peak_memory_mb(lambda: stock(ids[:4]), device)
        less = peak_memory_mb(lambda: pruned(ids), device)
        again = peak_memory_mb(lambda: stock(ids), device)
    assert whole > 100 and quarter == pytest.approx(whole / 4, rel=0.05), (whole, quarter)
    assert less < whole and again == pytest.approx(whole, rel=0.01), (whole, less, again)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU only: needs a CUDA device")
def test_cuda_events_time_a_kernel() -> None:
    x = torch.randn(2048, 2048, device="cuda")
    stats = measure_latency(lambda: x @ x, warmup=2, repeats=5, device="cuda")
    assert 0 < stats.median_ms < 1000 and hardware_fingerprint("cuda", "bfloat16")["id"].endswith(":bf16")


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="HostLoad reads /proc/stat (Linux)")
def test_host_load_sees_another_process_using_the_cpu() -> None:
    spinner = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass"]
    )
    try:
        time.sleep(0.3)  # the child is spinning
        with HostLoad() as load:
            time.sleep(0.8)  # this process idles: what the meter sees is the child's
    finally:
        spinner.wait()
    assert load.cores is not None and load.cores > 0.5


def test_busy_timings_are_retried_and_the_quietest_kept(monkeypatch) -> None:
    loads = iter([0.9, 0.4, 0.6])

    class FakeLoad:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.cores = next(loads)

    monkeypatch.setattr(latency, "HostLoad", FakeLoad)
    calls: list[int] = []
    _, busy = latency.quietest_latency(
        {"a": lambda: calls.append(1)}, attempts=3, wait_s=0, warmup=0, repeats=2
    )
    assert busy == 0.4 and len(calls) == 6  # three busy tries, the least busy kept

    loads = iter([0.1, 0.9])
    calls.clear()
    _, busy = latency.quietest_latency(
        {"a": lambda: calls.append(1)}, attempts=3, wait_s=0, warmup=0, repeats=2
    )
    assert busy == 0.1 and len(calls) == 2  # quiet at once: no retry
