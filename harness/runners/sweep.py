"""A sweep: every (model, task, method, speedup) cell fine-tuned once, evaluated, timed and counted.

Each finished cell is appended to ``<out>/results.jsonl`` at once; a rerun of the same sweep skips the
cells already there (and, through the fine-tune cache, the training too), so a sweep that dies half-way
resumes without losing or duplicating rows.

Two protocols measure quality: ``finetune`` (encoders' default; decoders' classification heads too)
fine-tunes once with offline tuning and evaluates every speedup; ``zero-shot`` (decoders' default) runs
the task's lm-eval configuration in ``tasks/`` through the pruned model and records lm-eval's metrics
and standard errors.

Every row says how many evaluation samples were too short to reach the target speedup
(``eval_clamped``): they ran at their own maximum, dense where a prompt is no longer than its
protected tokens.

Latency is measured on a fixed batch of ``batch_size`` × ``max_length`` tokens with no padding (text of
the evaluation split, chunked, under ``finetune``; random ids otherwise: speed does not depend on
which tokens they are), so the analytic prediction and the measurement describe the same work.  The
reference is stock transformers' dense forward of the same weights with its default attention, timed
interleaved with the pruned model in the same process.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

import harness
from harness.data.metrics import compute_metrics
from harness.data.tasks import TASKS, load_task
from harness.measure.flop_count import count_flops
from harness.measure.hardware import hardware_fingerprint
from harness.measure.latency import interleaved_latency
from harness.models.catalog import DECODERS, check_weights, load_causal_lm, load_classifier, model_spec
from harness.pruning.api import stock_copy
from harness.pruning.flops import max_speedup
from harness.pruning.methods import METHODS
from harness.pruning.pruner import check_speedup
from harness.registry import HarnessError
from harness.report.lock import run_lock
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
    protocol: str | None = None
    """"finetune" or "zero-shot"; None: each model's default (finetune for encoders, zero-shot for decoders)."""
    warmup: int = 2
    repeats: int = 10
    progress: bool = True

    def protocol_for(self, spec) -> str:
        """The protocol for a model (its ``ModelSpec``): the one asked for, or the family's default."""
        return self.protocol or ("zero-shot" if spec.family in DECODERS else "finetune")

    def validate(self) -> None:
        """Every user error the sweep can know of before it spends time: one clear HarnessError."""
        if self.protocol is not None and self.protocol not in PROTOCOLS:
            raise HarnessError(f"unknown protocol {self.protocol!r}; valid protocols: {', '.join(PROTOCOLS)}")
        specs = {name: model_spec(name) for name in self.models}  # a local folder's config is read once
        for name, spec in specs.items():
            protocol = self.protocol_for(spec)
            if protocol == "zero-shot" and spec.family not in DECODERS:
                raise HarnessError(f"--protocol zero-shot needs a decoder; {name} is a {spec.family!r} model")
            for task in self.tasks:
                if protocol == "finetune":
                    TASKS.get(task)
                elif task not in ZERO_SHOT_TASKS:
                    raise HarnessError(f"unknown zero-shot task {task!r}; valid zero-shot tasks: {', '.join(ZERO_SHOT_TASKS)}")
        for name in self.methods:
            METHODS.get(name)
        check_weights(self.weights)
        self.speedups = [check_speedup(s) for s in self.speedups]
        self._check_numbers()
        for name, spec in specs.items():
            self._check_reachable(name, spec)

    def _check_numbers(self) -> None:
        """Numbers that would crash deep inside the sweep, or make it spin (``--max-eval 0``), refused here."""
        counts = (("--batch-size", self.batch_size), ("--max-length", self.max_length), ("--repeats", self.repeats),
                  ("--max-train", self.max_train), ("--max-eval", self.max_eval))
        for name, value in counts:
            if value is not None and value < 1:
                raise HarnessError(f"{name} must be a positive integer, got {value}")
        if not (math.isfinite(self.train.epochs) and self.train.epochs > 0):
            raise HarnessError(f"--epochs must be a finite number > 0, got {self.train.epochs:g}")

    def _check_reachable(self, name: str, spec) -> None:
        auto = AutoModelForCausalLM if spec.family in DECODERS else AutoModelForSequenceClassification
        with torch.device("meta"):
            model = harness.prune(auto.from_config(spec.architecture()))
        maximum = model.harness_pruner.max_length
        if self.max_length > maximum:
            raise HarnessError(f"--max-length {self.max_length} exceeds {name}'s maximum input length of {maximum} tokens")
        best = max_speedup(model.harness_pruner.spec, self.max_length, model.pruning.schedule)
        for speedup in self.speedups:
            if speedup > best + 1e-9:
                raise HarnessError(
                    f"speedup {speedup:g} is unreachable for {name} at --max-length {self.max_length}; "
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


PROTOCOLS = ("finetune", "zero-shot")
ZERO_SHOT_TASKS = {"rt-polarity": "rt-polarity-zs", "boolq": "boolq-zs", "heldout-ppl": "heldout-ppl"}
"""Harness task name -> its lm-eval configuration in tasks/."""


def cell_key(model: str, weights: str, task: str, protocol: str, method: str, speedup: float) -> str:
    return f"{model}|{weights}|{task}|{protocol}|{method}|{speedup:g}"


def latency_batch(tokenizer, texts, batch_size: int, seq_len: int, vocab_size: int) -> dict[str, torch.Tensor]:
    """``batch_size`` rows of exactly ``seq_len`` tokens of ``texts`` (with [CLS]/[SEP] where the tokenizer
    has them), or of random ids when there is no text."""
    special = tokenizer is not None and tokenizer.cls_token_id is not None
    body = seq_len - 2 if special else seq_len
    if tokenizer is None or texts is None:
        ids = torch.randint(1, vocab_size, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(stream) >= batch_size * body:
            break
    if not stream:  # repeating nothing never grows: the data checks refuse empty texts, this is the backstop
        raise HarnessError("the evaluation texts have no tokens, so no latency batch can be built from them")
    stream = stream * -(-batch_size * body // len(stream))  # repeated until long enough
    rows = [stream[i * body : (i + 1) * body] for i in range(batch_size)]
    if special:
        rows = [[tokenizer.cls_token_id, *row, tokenizer.sep_token_id] for row in rows]
    ids = torch.tensor(rows)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def run_sweep(config: SweepConfig) -> Path:
    config.validate()
    store = ResultStore(config.run_dir())
    with run_lock(store.run_dir):  # a second live run into the folder would compute every cell again
        _run_cells_not_done(config, store)
    return store.run_dir


def _run_cells_not_done(config: SweepConfig, store: ResultStore) -> None:
    done = store.done_keys()
    hardware = hardware_fingerprint("cpu")
    write_json_atomic(store.run_dir / "sweep.json", {"config": asdict(config), "hardware": hardware})
    for model_name in config.models:
        protocol = config.protocol_for(model_spec(model_name))
        for task_name in config.tasks:
            keys = {(m, s): cell_key(model_name, config.weights, task_name, protocol, m, s)
                    for m in config.methods for s in config.speedups}
            todo = {cell: key for cell, key in keys.items() if key not in done}
            if todo:
                prepare = _finetuned if protocol == "finetune" else _zero_shot
                loaded, quality, texts, context = prepare(config, model_name, task_name)
                _run_cells(config, model_name, task_name, protocol, todo, store, hardware,
                           loaded, quality, texts, context)


NO_QUALITY = {"metrics": {}, "main_metric": None, "score": None, "eval_predicted_speedup": None, "eval_clamped": None}


def _finetuned(config, model_name, task_name):
    """A model fine-tuned once with offline tuning (from the cache when it exists), and its evaluator."""
    task_spec = TASKS.get(task_name)
    train = config.train
    if config.weights == "random":
        return load_classifier(model_name, "random", task_spec.num_labels), lambda loaded: NO_QUALITY, None, {}
    # data first: a bad --data-dir fails before any model loads
    task_data = load_task(task_name, data_dir=config.data_dir, seed=train.seed, limit=config.limits(task_spec))
    # The new head's initial weights come from the training seed, not from whatever drew random numbers
    # before: the fine-tuned model is then a function of what its cache key names.
    torch.manual_seed(train.seed)
    loaded = load_classifier(model_name, "pretrained", task_spec.num_labels)
    loaded, folder, reused = load_or_fine_tune(loaded, task_data, train, config.progress)
    texts = task_data.splits[task_spec.eval_splits[0]][task_spec.text_fields[0]].astype(str)
    context = {"data": task_data.provenance, "train": {"cache": str(folder), "reused": reused, **asdict(train)}}
    return loaded, lambda loaded: _finetuned_quality(loaded, task_data, config), texts, context


def _zero_shot(config, model_name, task_name):
    """A decoder evaluated through lm-eval on the task's configuration in tasks/."""
    loaded = load_causal_lm(model_name, config.weights)
    if config.weights == "random":
        return loaded, lambda loaded: NO_QUALITY, None, {}
    lm_task = ZERO_SHOT_TASKS[task_name]

    def quality(loaded):
        from harness.runners.lm_eval_bridge import evaluate

        metrics = evaluate(loaded.model, loaded.tokenizer, [lm_task], batch_size=config.batch_size,
                           limit=config.max_eval)[lm_task]
        main = next(name for name in ("acc", "word_perplexity") if name in metrics)
        realised = metrics.pop("eval_predicted_speedup", None)
        documents, clamped = metrics.pop("n", None), metrics.pop("eval_clamped", None)
        return {"metrics": metrics, "main_metric": main, "score": metrics[main], "eval_predicted_speedup": realised,
                "eval_documents": documents, "eval_clamped": clamped}

    return loaded, quality, None, {"data": {"lm_eval_task": lm_task, "limit": config.max_eval}}


def _run_cells(config, model_name, task_name, protocol, todo, store, hardware, loaded, quality, texts, context):
    stock = stock_copy(loaded.model)
    batch = latency_batch(loaded.tokenizer, texts, config.batch_size, config.max_length, loaded.model.config.vocab_size)
    with torch.no_grad():
        flops_dense = count_flops(lambda: stock(**batch))  # the same for every cell
    cells = tqdm(todo.items(), desc=f"{model_name} × {task_name}", disable=not config.progress, unit="cell")
    for (method, speedup), key in cells:
        model = harness.prune(loaded.model, method=method, speedup=speedup).eval()
        row = {"cell_key": key, "model": model_name, "checkpoint": loaded.checkpoint, "weights": loaded.weights,
               "task": task_name, "protocol": protocol, "method": method, "speedup": speedup}
        row.update(quality(loaded))
        row.update(_speed(model, stock, batch, config), flops_dense=flops_dense)
        row.update(hardware=hardware, data=context.get("data", {}), train=context.get("train", {}),
                   timestamp=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                   harness_version=harness.__version__)
        store.append(row)


def _finetuned_quality(loaded, task_data, config) -> dict:
    metrics, dense, pruned, clamped = {}, 0, 0, 0
    for split in task_data.spec.eval_splits:
        frame = task_data.splits[split]
        predictions, split_dense, split_pruned, split_clamped = predict(
            loaded, frame, task_data.spec, config.batch_size, config.max_length)
        prefix = "mm_" if split == "validation_mismatched" else ""
        for name, value in compute_metrics(task_data.spec, predictions, frame["label"].to_numpy()).items():
            metrics[prefix + name] = value
        dense, pruned, clamped = dense + split_dense, pruned + split_pruned, clamped + split_clamped
    main = task_data.spec.main_metric
    return {"metrics": metrics, "main_metric": main, "score": metrics[main], "eval_predicted_speedup": dense / pruned,
            "eval_clamped": clamped}


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
        "latency_ms": pruned_t.median_ms, "latency_p10_ms": pruned_t.p10_ms, "latency_p90_ms": pruned_t.p90_ms,
        "dense_latency_ms": dense_t.median_ms,
        "batch_size": config.batch_size, "seq_len": batch["input_ids"].shape[1],
        "threads": torch.get_num_threads(), "device": "cpu", "kept_tokens": kept,
    }
