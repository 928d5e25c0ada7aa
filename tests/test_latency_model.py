"""The latency model and the wall-clock speedup solver: synthetic tables (no timed assertions), the stored
calibration and its key, and the errors a user meets."""

import json

import pytest
import torch

import harness
from harness import cli
from harness.contracts.flops import ArchSpec, Schedule, UnreachableSpeedupError
from harness.measure import calibrate as calibration
from harness.measure.calibration_store import (
    calibration_key,
    calibration_path,
    find_calibration,
    save_calibration,
)
from harness.pruning.latency_model import LatencyModel, MissingCalibrationError
from harness.registry import HarnessError

LENGTHS = [1, 2, 4, 8, 16, 32, 64, 128]


def linear_tables(scale: float = 1.0) -> dict:
    """Per-layer ms linear in n (so interpolation is exact): a fixed cost (weight reads) plus per token."""
    line = lambda a, b: [scale * (a + b * n) for n in LENGTHS]  # noqa: E731
    return {
        "stock": line(1.0, 0.10),
        "stock_after": None,
        "drop_min": line(1.4, 0.05),
        "drop_all": line(1.5, 0.12),
        "outside_dense": line(0.5, 0.01),
        "outside_min": line(0.5, 0.01),
        "outside_all": line(0.5, 0.01),
        "single": scale * 0.8,
    }


def synthetic(key: dict, num_layers: int = 4) -> LatencyModel:
    return LatencyModel(key, num_layers, 1, LENGTHS, {1: linear_tables(), 4: linear_tables(3.0)})


SPEC = ArchSpec(num_layers=4, hidden=64, num_heads=4, head_dim=16, ffn_dim=128, head_flops=2 * 64 * 64)


def test_prediction_is_the_tables_arithmetic():
    model = synthetic(calibration_key("bert", SPEC))
    n = 37  # off the grid: linear tables interpolate exactly
    assert model.dense_ms(1, n) == pytest.approx(0.5 + 0.01 * n + 4 * (1.0 + 0.10 * n))
    # layer 1 stock, layer 2 drops 37 -> 20, layer 3 drops 20 -> 1, layer 4 runs on one word-vector
    drop = lambda n_in, k: (1.4 + 0.05 * n_in) + (1.5 + 0.12 * k) - (1.4 + 0.05 * k)  # noqa: E731
    expected = (
        (1.0 + 0.10 * n) + drop(n, 20) + drop(20, 1) - (1.5 + 0.12) + (1.4 + 0.05) + 0.8 + 0.5 + 0.01 * n
    )
    assert model.pruned_ms(1, n, [37, 20, 1, 1]) == pytest.approx(expected)
    # batch 2 lies a third of the way from batch 1 to batch 4 (scale 1 -> 3)
    assert model.dense_ms(2, n) == pytest.approx(model.dense_ms(1, n) * (1 + 2 / 3))
    assert model.dense_ms(8, n) == pytest.approx(model.dense_ms(4, n) * 2)  # beyond: proportional
    with pytest.raises(HarnessError, match="covers up to 128 tokens, not 200; calibrate longer inputs"):
        model.dense_ms(1, 200)


def test_a_pruned_forwards_residual_adds_to_the_tables_sum():
    """What whole pruned forwards took beyond the tables (``fit_residuals``) is added per length to every
    forward that drops tokens, not to the dense one or one that drops nothing; a calibration made before
    residuals predicts as it did."""
    plain = synthetic(calibration_key("bert", SPEC))
    tables = {
        batch: {**table, "residual": [0.5 + 0.1 * n for n in LENGTHS]}
        for batch, table in plain.tables.items()
    }
    fitted = LatencyModel(plain.key, 4, 1, LENGTHS, tables)
    n = 37
    assert fitted.dense_ms(1, n) == pytest.approx(plain.dense_ms(1, n))
    assert fitted.pruned_ms(1, n, [n] * 4) == pytest.approx(plain.pruned_ms(1, n, [n] * 4))
    assert fitted.pruned_ms(1, n, [37, 20, 1, 1]) == pytest.approx(
        plain.pruned_ms(1, n, [37, 20, 1, 1]) + 0.5 + 3.7
    )
    assert fitted.head(True).pruned_ms(1, n, [37, 20, 1, 1]) == pytest.approx(
        fitted.pruned_ms(1, n, [37, 20, 1, 1])
    )


def test_tables_are_made_monotone_by_pooling_not_by_minima():
    """Isotonic regression: a flat, noisy stretch (batch 1, weight-bound) is averaged, not taken at its
    lowest sample, which made every short length read low."""
    from harness.pruning.latency_model import _monotone

    assert _monotone([3.0, 1.0, 2.0, 5.0, 4.0]).tolist() == pytest.approx([2.0, 2.0, 2.0, 4.5, 4.5])
    assert _monotone([1.05, 0.95, 1.0, 1.0, 2.0]).tolist() == pytest.approx([1.0, 1.0, 1.0, 1.0, 2.0])
    assert _monotone([1.0, 2.0, 3.0]).tolist() == [1.0, 2.0, 3.0]


def test_last_token_head_has_its_own_series():
    tables = {
        **linear_tables(),
        "outside_dense_last": [0.2] * len(LENGTHS),
        "outside_last": [0.1] * len(LENGTHS),
    }
    model = LatencyModel(calibration_key("llama", SPEC), 4, 1, LENGTHS, {1: tables})
    last = model.head(True)
    assert last is model.head(True) and model.head(False) is model and last.head(True) is last
    assert last.dense_ms(1, 37) == pytest.approx(0.2 + 4 * (1.0 + 0.10 * 37))
    counts = [37, 20, 1, 1]
    assert last.pruned_ms(1, 37, counts) == pytest.approx(
        model.pruned_ms(1, 37, counts) - (0.5 + 0.01 * 37) + 0.1
    )
    assert synthetic(calibration_key("bert", SPEC)).head(True).dense_ms(1, 37) == pytest.approx(
        synthetic(calibration_key("bert", SPEC)).dense_ms(1, 37)
    )  # no last-token series: the head as timed


@pytest.mark.parametrize("batch, n, target", [(1, 40, 1.3), (1, 100, 2.0), (4, 100, 1.7), (2, 77, 1.5)])
def test_solver_inverts_the_synthetic_model(batch, n, target):
    model, schedule = synthetic(calibration_key("bert", SPEC)), Schedule()
    counts, value, reached = model.solve(SPEC, batch, n, target, schedule)
    assert reached and value == model.speedup(batch, n, counts) >= target - 1e-9
    # the smallest tau that reaches the target, by brute force on a fine grid
    top = schedule.tau_max(SPEC)
    first = next(
        tau
        for tau in (top * i / 20000 for i in range(20001))
        if model.speedup(batch, n, schedule.counts(SPEC, n, tau)) >= target - 1e-9
    )
    assert tuple(schedule.counts(SPEC, n, first)) == counts


def test_unreachable_target_runs_at_the_best_shape():
    model = synthetic(calibration_key("bert", SPEC))
    best = model.max_speedup(SPEC, 1, 64, Schedule())
    counts, value, reached = model.solve(SPEC, 1, 64, best + 1, Schedule())
    assert not reached and value == pytest.approx(best)


@pytest.fixture
def tiny_pruned(tiny_classifier, cache):
    model = tiny_classifier()
    harness.prune(model)
    return model


def tiny_key(model):
    return calibration_key("bert", model.arch_spec, "cpu", torch.float32)


def test_missing_calibration_says_how_to_make_one(tiny_pruned):
    with pytest.raises(MissingCalibrationError) as caught:
        harness.prune(tiny_pruned, speedup=2, speedup_model="latency")
    message = str(caught.value)
    assert "harness calibrate --models" in message and "\n" not in message
    harness.prune(tiny_pruned, speedup=1, speedup_model="latency")  # speedup 1 needs no calibration


def test_latency_solver_drives_the_forward(tiny_pruned):
    latency = synthetic(tiny_key(tiny_pruned))
    save_calibration(latency)
    model = harness.prune(tiny_pruned, speedup=2, speedup_model="latency")
    ids = torch.randint(3, 100, (4, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(input_ids=ids)
    counts, value, _ = latency.solve(model.arch_spec, 4, 64, 2.0, model.pruning.schedule)
    assert [max(map(len, layer)) for layer in model.last_kept] == list(counts)
    dense, pruned = model.predicted_latency()
    assert dense / pruned == pytest.approx(value) and dense / pruned >= 2 - 1e-9
    assert model.config.harness_pruning["speedup_model"] == "latency"
    assert model.max_wallclock_speedup(4, 64) == pytest.approx(
        latency.max_speedup(model.arch_spec, 4, 64, model.pruning.schedule)
    )

    # a shape that cannot reach the request runs at its best and is counted as clamped
    assert model.max_wallclock_speedup(1, 3) < 2
    with torch.no_grad():
        model(input_ids=ids[:1, :3])
    assert model.last_forward.clamped == 1

    with pytest.raises(
        UnreachableSpeedupError,
        match=r"wall-clock speedup 50 is unreachable .* the largest "
        r"reachable there is \d",
    ):
        model.set_speedup(50)


def test_unknown_speedup_model(tiny_pruned):
    with pytest.raises(
        HarnessError, match="unknown speedup model 'bogus'; valid speedup models: flops, latency"
    ):
        harness.prune(tiny_pruned, speedup=2, speedup_model="bogus")


def test_calibration_is_stored_by_key_and_reused(tiny_checkpoint, cache, monkeypatch):
    latency, reused = calibration.calibrate(
        str(tiny_checkpoint),
        [1, 2],
        max_length=16,
        budget_s=0.0,
        validate_s=0.01,
        progress=False,
        log=lambda line: None,
    )
    assert not reused and latency.batch_sizes == [1, 2] and latency.lengths[-1] == 16
    path = calibration_path(latency.key)
    assert path.parent == cache / "latency" and path.is_file()
    stored = json.loads(path.read_text())
    assert {"architecture", "dtype", "device", "hardware", "torch", "threads"} <= set(stored["key"])
    assert stored["key"]["threads"] == torch.get_num_threads() and stored["key"]["device"] == "cpu"
    assert stored["validation"]["latency_predictions"] > 0 and "latency_within_10pct" in stored["validation"]
    assert all(
        len(stored["tables"]["1"][name]) == len(latency.lengths)
        for name in ("stock", "drop_min", "drop_all", "residual")
    )

    monkeypatch.setattr(calibration, "time_probes", lambda *a, **k: pytest.fail("timed again"))
    again, reused = calibration.calibrate(str(tiny_checkpoint), [2], max_length=12, progress=False)
    assert reused and again is find_calibration(latency.key)
    # a calibration of an older format (timed with autograd on, no residual) is made again, not used
    path.write_text(json.dumps({**stored, "format": 1}))
    assert find_calibration(latency.key) is None
    # another thread count is another machine as far as latency goes
    assert find_calibration({**latency.key, "threads": latency.key["threads"] + 7}) is None


def test_cli_calibrate_then_run_rows_carry_the_speedup_model(
    tiny_checkpoint, tmp_path, cache, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert (
        cli.main(
            [
                "calibrate",
                "--models",
                str(tiny_checkpoint),
                "--batch-sizes",
                "2",
                "--max-length",
                "8",
                "--budget",
                "0",
                "--validate-seconds",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "calibration of bert-L6" in out and "no held-out validation" in out

    # the run reads the calibration of this machine: a synthetic one keeps the test free of timing noise
    from harness.measure.calibrate import load_for_timing

    save_calibration(synthetic(tiny_key(load_for_timing(str(tiny_checkpoint), "cpu")), num_layers=6))
    run = tmp_path / "runs" / "latency"
    assert (
        cli.main(
            [
                "run",
                "--models",
                str(tiny_checkpoint),
                "--weights",
                "random",
                "--tasks",
                "sst2",
                "--speedups",
                "1,1.5",
                "--batch-size",
                "2",
                "--max-length",
                "48",
                "--repeats",
                "1",
                "--speedup-model",
                "latency",
                "--out",
                str(run),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert [r["speedup_model"] for r in rows] == ["latency", "latency"]
    assert all(r["predicted_latency_ms"] > 0 and r["predicted_dense_latency_ms"] > 0 for r in rows)
    assert rows[1]["predicted_wallclock_speedup"] >= 1.5 - 1e-9
    assert rows[1]["cell_key"].endswith("|latency")
    board = (run / "leaderboards" / "latency.md").read_text()
    assert board.count("| wall-clock |") == 2  # the compact board says what the speedups mean
    assert "predicted_latency_ms" in (run / "leaderboards" / "latency.csv").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["run", "--speedup-model", "bogus"],
            "unknown speedup model 'bogus'; valid speedup models: flops, latency",
        ),
        (
            ["run", "--models", "bert", "--weights", "random", "--speedup-model", "latency"],
            "needs a latency calibration of bert-L12",
        ),
        (["calibrate", "--batch-sizes", "one"], "--batch-sizes must be comma-separated positive integers"),
    ],
)
def test_bad_latency_input_is_one_line_and_exit_2(tmp_path, cache, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("harness: error:") and err.count("\n") == 1
    if "calibration" in message:
        assert "make one with: harness calibrate --models bert" in err


def test_decoder_calibration_times_the_masked_stock_layer_after_a_drop(tiny_gpt2_checkpoint, cache):
    latency, _ = calibration.calibrate(
        str(tiny_gpt2_checkpoint),
        [2],
        max_length=12,
        budget_s=0.0,
        validate_s=0,
        progress=False,
        log=lambda line: None,
    )
    table = latency.tables[2]
    assert latency.protected == 2 and latency.key["architecture"].startswith("gpt2-L6")
    assert (
        table["stock_after"] is not None and table["single"] is None
    )  # causal: an explicit mask after a drop
    assert (
        len(table["outside_last"]) == len(table["outside_dense_last"]) == len(latency.lengths)
    )  # prefill head
    from harness.measure.calibrate import load_for_timing

    model = harness.prune(load_for_timing(str(tiny_gpt2_checkpoint), "cpu"), speedup_model="latency")
    assert model.max_wallclock_speedup(2, 12) > 0  # how much, a tiny model's timings decide
    with torch.no_grad():
        model(input_ids=torch.randint(1, model.config.vocab_size, (2, 12)))
    dense, pruned = model.predicted_latency()
    assert dense == pytest.approx(pruned) and not model.harness_pruner.last_token_logits
    with torch.no_grad():
        model(input_ids=torch.randint(1, model.config.vocab_size, (2, 12)), logits_to_keep=1)
    assert model.harness_pruner.last_token_logits  # noted from the keywords: the head on one row
    assert model.predicted_latency()[0] == pytest.approx(latency.head(True).dense_ms(2, 12))


def test_calibration_rounds_visit_every_point_in_a_rotating_order():
    """Each round times every grid point once (so a host that slows down mid-calibration slows every
    point alike); the start of the order moves each round; a value is the median of its rounds."""
    order: list[str] = []
    probes = [
        calibration.Probe(name, 0, lambda item, name=name: order.append(name), [None])
        for name in ("a", "b", "c")
    ]
    calibration.time_probes(probes, "cpu", budget_s=0.0, rounds=3)
    timed = order[6:]  # two untimed sizing calls per probe come first
    assert timed == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(len(p.samples) == 3 and p.per_round == 1 for p in probes)
    probes[0].samples = [0.003, 0.001, 0.002]
    assert calibration.probe_value(probes[0]) == pytest.approx(2.0)


def test_calibration_times_layer_calls_without_autograd():
    """The forwards the tables predict run under ``no_grad``; a probe timed with autograd on kept the
    explicit attention's scores alive for backward and read the batch-16 drop layers up to 40% slow."""
    weight = torch.nn.Parameter(torch.ones(2, 2))
    outputs: list[torch.Tensor] = []
    probe = calibration.Probe("stock", 0, lambda item: outputs.append(item @ weight), [torch.ones(1, 2)])
    calibration.time_probes([probe], "cpu", budget_s=0.0, rounds=2)
    assert outputs and not any(out.requires_grad for out in outputs)


def test_the_dense_reference_reads_the_pruned_models_weights(tiny_pruned):
    """Dense and pruned share weight tensors: a copy's own placement in memory changed its speed by up to
    25% on the shared CPU, which would land in every measured speedup."""
    from harness.pruning.pruned_model import stock_copy

    stock = stock_copy(tiny_pruned)
    assert type(stock) is type(tiny_pruned).__bases__[1]
    pruned_weights = {name: p.data_ptr() for name, p in tiny_pruned.named_parameters()}
    assert {name: p.data_ptr() for name, p in stock.named_parameters()} == pruned_weights
    ids = torch.randint(1, tiny_pruned.config.vocab_size, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(
            stock(input_ids=ids).logits, tiny_pruned(input_ids=ids).logits, rtol=0, atol=1e-5
        )
