"""A sweep: every (model, task, method, speedup) cell fine-tuned once, evaluated, timed and counted.

Each finished cell is appended to ``<out>/results.jsonl`` at once; a rerun of the same sweep skips the
cells already there (and, through the fine-tune cache, the training too), so a sweep that dies half-way
resumes without losing or duplicating rows.

Latency is measured on a fixed batch of ``batch_size`` × ``max_length`` tokens with no padding (text of
the evaluation split, chunked; random ids for random weights), so the analytic prediction and the
measurement describe the same work.  The reference is stock transformers' dense forward of the same
weights with its default attention, timed interleaved with the pruned model in the same process.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import BertForSequenceClassification

import harness
from harness.data.metrics import compute_metrics
from harness.data.tasks import TASKS, load_task
from harness.measure.flop_count import count_flops
from harness.measure.hardware import hardware_fingerprint
from harness.measure.latency import interleaved_latency
from harness.models.catalog import WEIGHTS, load_classifier, model_spec
from harness.pruning.api import stock_copy
from harness.pruning.flops import max_speedup
from harness.pruning.methods import METHODS
from harness.pruning.pruner import check_speedup
from harness.registry import HarnessError
from harness.report.store import ResultStore, write_json_atomic
from harness.runners.glue import TrainSettings, load_or_fine_tune, predict


@dataclass
class SweepConfig:
    models: list[str] = field(default_factory=lambda: ["minilm"])
    tasks: list[str] = field(default_factory=lambda: ["rt-polarity"])
    speedups: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0, 4.0])
    methods: list[str] = field(default_factory=lambda: ["acc"])
    weights: str = "pretrained"
    batch_size: int = 32
    max_length: int = 128
    out: str | None = None
    data_dir: str | None = None
    train: TrainSettings = field(default_factory=TrainSettings)
    max_train: int | None = None
    max_eval: int | None = None
    warmup: int = 2
    repeats: int = 10
    progress: bool = True

    def validate(self) -> None:
        """Every user error the sweep can know of before it spends time: one clear HarnessError."""
        for name in self.models:
            model_spec(name)
        for name in self.tasks:
            TASKS.get(name)
        for name in self.methods:
            METHODS.get(name)
        if self.weights not in WEIGHTS:
            raise HarnessError(f"unknown weights {self.weights!r}; valid weights: {', '.join(WEIGHTS)}")
        self.speedups = [check_speedup(s) for s in self.speedups]
        for name, value in (("--batch-size", self.batch_size), ("--max-length", self.max_length)):
            if value < 1:
                raise HarnessError(f"{name} must be a positive integer, got {value}")
        for name in self.models:
            self._check_reachable(name)

    def _check_reachable(self, name: str) -> None:
        with torch.device("meta"):
            model = harness.prune(BertForSequenceClassification(model_spec(name).architecture()))
        limit = min(self.max_length, model.harness_pruner.max_length)
        best = max_speedup(model.harness_pruner.spec, limit, model.pruning.schedule)
        for speedup in self.speedups:
            if speedup > best + 1e-9:
                raise HarnessError(
                    f"speedup {speedup:g} is unreachable for {name} at --max-length {limit}; "
                    f"the largest reachable speedup is {best:.3f}")

    def limits(self, task) -> dict[str, int]:
        """Row caps per split role, for quick runs (--max-train, --max-eval)."""
        caps = {role: self.max_eval for role in task.splits if role != "train"}
        caps["train"] = self.max_train
        return {role: cap for role, cap in caps.items() if cap is not None}

    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        return Path("runs") / "_".join(["+".join(self.models), "+".join(self.tasks), self.weights]).replace("/", "-")


def cell_key(model: str, weights: str, task: str, method: str, speedup: float) -> str:
    return f"{model}|{weights}|{task}|{method}|{speedup:g}"


def latency_batch(tokenizer, frame, task, batch_size: int, seq_len: int, vocab_size: int) -> dict[str, torch.Tensor]:
    """``batch_size`` rows of exactly ``seq_len`` tokens: [CLS] + a chunk of the evaluation text + [SEP]."""
    body = seq_len - 2
    if tokenizer is None:
        ids = torch.randint(1, vocab_size, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    stream: list[int] = []
    for text in frame[task.text_fields[0]].astype(str):
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(stream) >= batch_size * body:
            break
    while len(stream) < batch_size * body:
        stream = stream + stream
    rows = [[tokenizer.cls_token_id, *stream[i * body : (i + 1) * body], tokenizer.sep_token_id] for i in range(batch_size)]
    ids = torch.tensor(rows)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def run_sweep(config: SweepConfig) -> Path:
    config.validate()
    store = ResultStore(config.run_dir())
    done = store.done_keys()
    hardware = hardware_fingerprint("cpu")
    write_json_atomic(store.run_dir / "sweep.json", {"config": asdict(config), "hardware": hardware})
    for model_name in config.models:
        for task_name in config.tasks:
            keys = {(m, s): cell_key(model_name, config.weights, task_name, m, s)
                    for m in config.methods for s in config.speedups}
            todo = {cell: key for cell, key in keys.items() if key not in done}
            if todo:
                _run_model_task(config, model_name, task_name, todo, store, hardware)
    return store.run_dir


def _run_model_task(config, model_name, task_name, todo, store, hardware) -> None:
    task_spec = TASKS.get(task_name)
    train = config.train
    task_data, finetuned = None, None
    if config.weights == "pretrained":  # data first: a bad --data-dir fails before any model loads
        task_data = load_task(task_name, data_dir=config.data_dir, seed=train.seed, limit=config.limits(task_spec))
    loaded = load_classifier(model_name, config.weights, task_spec.num_labels)
    if task_data is not None:
        loaded, folder, reused = load_or_fine_tune(loaded, task_data, train, config.progress)
        finetuned = {"cache": str(folder), "reused": reused, **asdict(train)}
    stock = stock_copy(loaded.model)
    eval_frame = task_data.splits[task_data.spec.eval_splits[0]] if task_data else None
    batch = latency_batch(loaded.tokenizer, eval_frame, task_spec, config.batch_size, config.max_length,
                          loaded.model.config.vocab_size)
    cells = tqdm(todo.items(), desc=f"{model_name} × {task_name}", disable=not config.progress, unit="cell")
    for (method, speedup), key in cells:
        model = harness.prune(loaded.model, method=method, speedup=speedup).eval()
        row = {"cell_key": key, "model": model_name, "checkpoint": loaded.checkpoint, "weights": loaded.weights,
               "task": task_name, "method": method, "speedup": speedup}
        row.update(_quality(loaded, task_data, config))
        row.update(_speed(model, stock, batch, config))
        row.update(hardware=hardware, data=task_data.provenance if task_data else {}, train=finetuned or {},
                   timestamp=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                   harness_version=harness.__version__)
        store.append(row)


def _quality(loaded, task_data, config) -> dict:
    if task_data is None:
        return {"metrics": {}, "main_metric": None, "score": None, "eval_predicted_speedup": None}
    metrics, dense, pruned = {}, 0, 0
    for split in task_data.spec.eval_splits:
        frame = task_data.splits[split]
        predictions, split_dense, split_pruned = predict(loaded, frame, task_data.spec, config.batch_size, config.max_length)
        prefix = "mm_" if split == "validation_mismatched" else ""
        for name, value in compute_metrics(task_data.spec, predictions, frame["label"].to_numpy()).items():
            metrics[prefix + name] = value
        dense, pruned = dense + split_dense, pruned + split_pruned
    main = task_data.spec.main_metric
    return {"metrics": metrics, "main_metric": main, "score": metrics[main], "eval_predicted_speedup": dense / pruned}


@torch.no_grad()
def _speed(model, stock, batch, config) -> dict:
    timings = interleaved_latency({"dense": lambda: stock(**batch), "pruned": lambda: model(**batch)},
                                  warmup=config.warmup, repeats=config.repeats)
    flops_measured = count_flops(lambda: model(**batch))
    dense_flops, analytic = model.harness_pruner.last_flops
    kept = [sum(len(sample) for sample in layer) / len(layer) for layer in model.last_kept]
    pruned_t, dense_t = timings["pruned"], timings["dense"]
    return {
        "predicted_speedup": dense_flops / analytic,
        "measured_speedup": dense_t.median_ms / pruned_t.median_ms,
        "flops_measured": flops_measured, "flops_analytic": analytic,
        "flops_dense": count_flops(lambda: stock(**batch)),
        "latency_ms": pruned_t.median_ms, "latency_p10_ms": pruned_t.p10_ms, "latency_p90_ms": pruned_t.p90_ms,
        "dense_latency_ms": dense_t.median_ms,
        "batch_size": config.batch_size, "seq_len": batch["input_ids"].shape[1],
        "threads": torch.get_num_threads(), "device": "cpu", "kept_tokens": kept,
    }
