"""A sweep: every (model, task, method, speedup) cell fine-tuned once (per seed), evaluated, timed and counted.

Each finished cell is appended to ``<out>/results.jsonl`` at once; a rerun of the same sweep skips the
cells already there (and, through the fine-tune cache, the training too), so a sweep that dies half-way
resumes without losing or duplicating rows.  Every row carries its cell's identity (everything that
determines its numbers: ``harness.runners.identity``); a rerun asking for cells of another identity than the
folder's rows (other data, weights or settings) is refused before any work, naming what changed.

Protocols measure quality (``harness.runners.protocols``): ``finetune`` (encoders' default; decoders'
classification heads too) fine-tunes once per method with its recipe and evaluates every speedup;
``zero-shot`` (decoders' default) runs the task's lm-eval configuration through the pruned model and
records lm-eval's metrics and standard errors.

Every row says how many evaluation samples were too short to reach the target speedup
(``eval_clamped``): they ran at their own maximum, dense where a prompt is no longer than its
protected tokens.

Latency is measured on a fixed batch of ``batch_size`` × ``max_length`` tokens with no padding (text of
the evaluation split, chunked, under ``finetune``; random ids otherwise: speed does not depend on
which tokens they are), so the analytic prediction and the measurement describe the same work.  The
reference is stock transformers' dense forward of the same weights with its default attention, timed
interleaved with the pruned model in the same process, on the device the sweep names (``--device``).
A timing during which other processes used the CPU is retried a little later, and the row records the
foreign load of the timing it kept (``host_busy_cores``), so reports can mark busy-machine figures.
With ``speedup_model="latency"`` the speedups are wall-clock targets solved on this machine's calibration
for the latency batch's shape; every row names its speedup model and carries the latency the
calibration predicts (where one exists) beside the measured one.

Decoders with an LM head are also timed through ``generate`` (``harness.measure.generation``): time to
first token and decode tokens/s, pruned against stock dense, interleaved.  The prompt is the latency
batch itself (``batch_size`` prompts of ``max_length`` tokens, no padding), so TTFT, the forward latency
and the FLOP prediction all describe one shape, and ``--batch-size``/``--max-length`` set the prompt
(``--batch-size 1 --max-length 1024`` is one 1,024-token chat prompt), less its first tokens where the
model has no positions left for the new ones (GPT-2 at 1,024 tokens; ``generation_prompt_len`` says).
``--repeats`` sets the timed rounds of these too; their warm-up is one round (the forward timing just
before has warmed the weights).
Only the pruned model's public surface is read (``harness.pruning.pruned_model``).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from harness.api import prune
from harness.contracts.flops import check_speedup, require_reachable
from harness.data.tasks import get_task, is_task_file
from harness.measure.calibration_store import calibration_key, require_calibration
from harness.measure.flop_count import count_flops
from harness.measure.generation import DECODE_TOKENS, generation_calls, generation_speeds
from harness.measure.hardware import DTYPES, check_device, check_dtype, hardware_fingerprint
from harness.measure.latency import quietest_latency
from harness.measure.memory import peak_memory_mb
from harness.models import family_for
from harness.models.catalog import check_weights, model_spec
from harness.pruning.latency_model import check_speedup_model, require_reachable_latency
from harness.pruning.methods import METHODS
from harness.pruning.pruned_model import stock_copy
from harness.registry import HarnessError
from harness.report.lock import run_lock
from harness.report.store import RESULTS_SCHEMA, ResultStore, report_rows, write_json_atomic
from harness.runners.identity import check_folder, identities
from harness.runners.lm_training import DEFAULT_TRAIN_ON
from harness.runners.prompt_suites import check_num_fewshot, check_prompts
from harness.runners.protocols import PROTOCOLS
from harness.training.lm import LMTrainSettings, check_lm_settings
from harness.training.loop import TrainSettings
from harness.version import __version__

REPEATS = 10
PROMPT_REPEATS = 3
"""Prompt modes time each mode's own prompts as a whole batch (``batch_size`` rows at the mode's mean
length): seconds per forward on a CPU, where latency took 93% of a profiled run at ``--limit 5``.  Three
interleaved repeats after the warmup keep the measurement (dense and pruned, alternating, medians) and cost
a third of ten; ``--repeats`` sets more."""


@dataclass
class SweepConfig:
    models: list[str] = field(default_factory=lambda: ["minilm"])
    tasks: list[str] = field(default_factory=lambda: ["rt-polarity"])
    speedups: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0, 4.0])
    """Numbers >= 1 (or their text, as the command line gives them); ``validate`` makes them floats."""
    methods: list[str] | None = None
    """None: each protocol's ``default_method`` (finetune: ``acc-decay-distill``, the best ACC recipe of
    the study in the README; the others: ``acc``, the reference)."""
    weights: str = "pretrained"
    batch_size: int = 32
    max_length: int = 128
    out: str | None = None
    data_dir: str | None = None
    train: TrainSettings = field(default_factory=TrainSettings)
    lm_train: LMTrainSettings = field(default_factory=LMTrainSettings)
    """``--protocol finetune-lm``'s tuning (its seed and method come from the cell, as ``train``'s do)."""
    train_on: list[str] = field(default_factory=lambda: list(DEFAULT_TRAIN_ON))
    """What ``finetune-lm`` tunes on (``--train-on``: lm-eval tasks with a training split, or text files)."""
    max_train: int | None = None
    max_eval: int | None = None
    """At most this many evaluation documents per task (``--limit``, alias ``--max-eval``): the first N
    under lm-eval protocols, as lm-eval's ``--limit``; a seeded sample of N under ``finetune``."""
    protocol: str | None = None
    """A registered protocol ("finetune", "zero-shot"); None: each model family's default."""
    device: str = "cpu"
    """cpu, cuda or cuda:N: where models train, evaluate and are timed."""
    dtype: str | None = None
    """float32, bfloat16 or float16 (CUDA only): the weights and compute of every evaluation and timing;
    None: float32 on a CPU, bfloat16 on CUDA (``hardware.default_dtype``).  Fine-tunes train in float32 (their
    cache holds float32 weights, shared by every dtype) and are cast after training, as deployed models are;
    a method's inference tuning (LTP's thresholds, LAT's search) is fitted on the float32 model too."""
    speedup_model: str = "flops"
    """What a speedup means: "flops" (FLOPs(dense)/FLOPs(pruned)) or "latency" (predicted wall-clock on this
    machine for the latency batch's shape; needs ``harness calibrate``)."""
    prompts: list[str] | None = None
    """Prompt modes (zero-shot, few-shot, instruction): each is its own protocol ``prompts/<mode>``
    (``harness.runners.prompt_suites``), in place of ``protocol``."""
    num_fewshot: int | None = None
    """Demonstrations in few-shot mode (None: the task file's, 5)."""
    chat_template: bool = False
    """Instruction mode through the tokenizer's chat template (recorded in every row)."""
    seeds: int = 1
    """Fine-tunes per (model, task, method), with training seeds 0..seeds-1 (protocols that train)."""
    search: int = 8
    """Generations of the inference search of methods that have one (LAT); 0: the shared profile."""
    warmup: int = 2
    repeats: int | None = None
    """Timed forwards per variant and cell; None: ``REPEATS``, or ``PROMPT_REPEATS`` with ``prompts``."""
    progress: bool = True

    def protocol_for(self, spec) -> str:
        """The protocol for a model (its ``ModelSpec``): the one asked for, or the family's default."""
        return self.protocol or spec.family_contract.default_protocol

    def protocols_for(self, spec) -> list[str]:
        """Every protocol a model is evaluated under: one per prompt mode with ``prompts``, else one."""
        if not self.prompts:
            return [self.protocol_for(spec)]
        tuned = "finetune-lm/" if self.protocol == "finetune-lm" else ""
        return [f"{tuned}prompts/{mode}" for mode in self.prompts]

    def methods_for(self, protocol) -> list[str]:
        """The methods evaluated under ``protocol``: ``--methods``, else the protocol's default."""
        return self.methods if self.methods is not None else [protocol.default_method]

    def validate(self) -> dict:
        """Every user error the sweep can know of before it spends time: one clear HarnessError.

        Returns what it resolved, so nothing is resolved twice: ``{"models": {name: ModelSpec},
        "tasks": {name: Task}}``."""
        if self.protocol is not None:
            PROTOCOLS.get(self.protocol)
        check_prompts(self.prompts, self.protocol, self.chat_template)
        specs = {name: model_spec(name) for name in self.models}  # a local folder's config is read once
        tasks = {name: get_task(name) for name in self.tasks}
        for spec in specs.values():
            for name in self.protocols_for(spec):
                for task in tasks.values():
                    PROTOCOLS.get(name).check(spec.family_contract, task)
        if self.prompts and "few-shot" in self.prompts:
            for task in tasks:
                check_num_fewshot(task, self.num_fewshot)
        for name in self.methods or ():
            METHODS.get(name)
        if self.methods is not None and len(set(self.methods)) != len(self.methods):
            raise HarnessError(f"--methods names a method twice: {','.join(self.methods)}")
        self._check_methods_fit(specs)
        check_weights(self.weights)
        check_speedup_model(self.speedup_model)
        self.device = check_device(self.device)
        self.dtype = check_dtype(self.dtype, self.device)
        self.speedups = [check_speedup(s) for s in self.speedups]
        if self.repeats is None:
            self.repeats = PROMPT_REPEATS if self.prompts else REPEATS
        self._check_numbers()
        for name, spec in specs.items():
            self._check_reachable(name, spec)
        return {"models": specs, "tasks": tasks}

    def _check_numbers(self) -> None:
        """Numbers that would crash deep inside the sweep, or make it spin (``--limit 0``), refused here."""
        counts = (
            ("--batch-size", self.batch_size),
            ("--max-length", self.max_length),
            ("--repeats", self.repeats),
            ("--max-train", self.max_train),
            ("--limit/--max-eval", self.max_eval),
            ("--seeds", self.seeds),
        )
        for name, value in counts:
            if value is not None and value < 1:
                raise HarnessError(f"{name} must be a positive integer, got {value}")
        if isinstance(self.search, bool) or not isinstance(self.search, int) or self.search < 0:
            raise HarnessError(f"--search must be an integer >= 0, got {self.search}")
        check_lm_settings(self.lm_train)
        if not (math.isfinite(self.train.epochs) and self.train.epochs > 0):
            raise HarnessError(f"--epochs must be a finite number > 0, got {self.train.epochs:g}")
        most = 1000  # 1e308 crashed the progress bar; past 1000 passes a fine-tune is a typo, not a recipe
        if self.train.epochs > most:
            raise HarnessError(
                f"--epochs must be at most {most} (passes over the training rows), got {self.train.epochs:g}"
            )

    def _check_methods_fit(self, specs: dict) -> None:
        """Methods that only some kinds or families of model support, or only the FLOP speedup model,
        refused up front."""
        for name, spec in specs.items():
            methods = dict.fromkeys(
                method
                for protocol in self.protocols_for(spec)
                for method in self.methods_for(PROTOCOLS.get(protocol))
            )
            for method in map(METHODS.get, methods):
                if self.speedup_model == "latency" and not method.latency_model:
                    raise HarnessError(
                        f"method {method.name!r} plans its own counts; it works with "
                        f"--speedup-model flops only"
                    )
                refusal = method.refusal(spec.family_contract)  # kinds, then a family-specific method's list
                if refusal:
                    raise HarnessError(f"{name}: {refusal}")

    def _check_reachable(self, name: str, spec) -> None:
        with torch.device("meta"):
            model = prune(spec.family_contract.auto_class.from_config(spec.architecture()))
        if self.max_length > model.max_length:
            raise HarnessError(
                f"--max-length {self.max_length} exceeds {name}'s maximum input length of "
                f"{model.max_length} tokens"
            )
        if self.speedup_model == "latency":
            key = calibration_key(spec.family_contract.name, model.arch_spec, self.device, DTYPES[self.dtype])
            latency = require_calibration(key, name)
            for speedup in self.speedups:
                require_reachable_latency(
                    latency,
                    model.arch_spec,
                    self.batch_size,
                    self.max_length,
                    model.pruning.schedule,
                    speedup,
                    f"for {name} at --batch-size {self.batch_size} x --max-length {self.max_length}",
                )
            return
        for speedup in self.speedups:
            require_reachable(
                model.arch_spec,
                self.max_length,
                model.pruning.schedule,
                speedup,
                f"for {name} at --max-length {self.max_length}",
            )

    def limits(self, task) -> dict[str, int]:
        """Row caps per split role, for quick runs (--max-train, --limit alias --max-eval)."""
        caps = {role: self.max_eval for role in task.splits if role != "train"}
        caps["train"] = self.max_train
        return {role: cap for role, cap in caps.items() if cap is not None}

    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        tasks = [Path(task).stem if is_task_file(task) else task for task in self.tasks]
        prompts = (
            [
                f"prompts{'' if self.num_fewshot is None else f'-k{self.num_fewshot}'}"
                f"{'-chat' if self.chat_template else ''}"
            ]
            if self.prompts
            else []
        )
        return Path("runs") / "_".join(
            ["+".join(self.models), "+".join(tasks), self.weights, *prompts]
        ).replace("/", "-")


def cell_key(
    model: str,
    weights: str,
    task: str,
    protocol: str,
    method: str,
    speedup: float,
    speedup_model: str = "flops",
    seed: int = 0,
) -> str:
    key = f"{model}|{weights}|{task}|{protocol}|{method}|{speedup:g}"
    key = key if speedup_model == "flops" else f"{key}|{speedup_model}"  # FLOP keys as before (resume)
    return key if seed == 0 else f"{key}|seed{seed}"


def latency_batch(tokenizer, texts, batch_size: int, seq_len: int, vocab_size: int) -> torch.Tensor:
    """``batch_size`` rows of exactly ``seq_len`` token ids of ``texts`` (with [CLS]/[SEP] where the
    tokenizer has them), or random ids when there is no text."""
    special = tokenizer is not None and tokenizer.cls_token_id is not None
    body = seq_len - 2 if special else seq_len
    if tokenizer is None or texts is None:
        return torch.randint(1, vocab_size, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
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
    return torch.tensor(rows)


def run_sweep(config: SweepConfig, executor=None) -> Path:
    """Run the sweep's unfinished cells with ``executor`` (None: ``SerialExecutor``, one after another in
    this process; ``harness.runners.ray_executor.RayExecutor`` spreads them over a Ray cluster)."""
    executor = SerialExecutor() if executor is None else executor
    resolved = config.validate()
    resolved["identities"] = identities(
        config, resolved, PROTOCOLS
    )  # checkpoints resolved: before the folder
    with executor.session(config):  # a cluster that does not answer is refused before the folder exists
        store = ResultStore(config.run_dir())
        with run_lock(store.run_dir):  # a second live run into the folder would compute every cell again
            # one experiment per folder; a cell twice or a row of a newer harness is refused as reports refuse it
            check_folder(report_rows(store.path), resolved["identities"], store.run_dir)
            groups = list(pending_groups(config, resolved, store.done_keys()))
            executor.run(config, groups, store, _header_writer(config, store))
    return store.run_dir


@dataclass(frozen=True)
class CellGroup:
    """The unfinished cells of one fine-tune (model × task × protocol × method × seed): prepared once
    (loaded, trained or taken from the fine-tune cache, the method fitted), then measured per speedup."""

    cells: dict
    """What every row of the group names: model, task, protocol, method, seed and identity."""
    protocol: Any
    task: Any
    todo: dict
    """{speedup: cell_key} of the cells not yet in results.jsonl."""

    @property
    def label(self) -> str:
        return f"{self.cells['model']} × {self.cells['task']} × {self.cells['method']}"


def pending_groups(config: SweepConfig, resolved: dict, done: set):
    """Every group with a cell not in ``done``, in the sweep's order (models, tasks, protocols, methods,
    seeds): what either executor runs."""
    for model_name, spec in resolved["models"].items():
        for protocol, task in (
            (PROTOCOLS.get(name), task)
            for task in resolved["tasks"].values()
            for name in config.protocols_for(spec)
        ):
            seeds = range(config.seeds) if protocol.trains and config.weights == "pretrained" else [0]
            for method, seed in ((method, seed) for method in config.methods_for(protocol) for seed in seeds):
                keys = {
                    speedup: cell_key(
                        model_name,
                        config.weights,
                        task.name,
                        protocol.name,
                        method,
                        speedup,
                        config.speedup_model,
                        seed,
                    )
                    for speedup in config.speedups
                }
                todo = {speedup: key for speedup, key in keys.items() if key not in done}
                if todo:
                    cells = {
                        "model": model_name,
                        "task": task.name,
                        "protocol": protocol.name,
                        "method": method,
                        "seed": seed,
                        "identity": resolved["identities"][model_name, task.name, protocol.name],
                    }
                    yield CellGroup(cells, protocol, task, todo)


def _header_writer(config: SweepConfig, store: ResultStore):
    """A call that writes ``sweep.json`` the first time it is made: once the first group's model and data
    load, so a run refused there leaves the folder as it was.  Its hardware is the driver's; every row
    names the machine that timed it."""
    header = {"config": asdict(config), "hardware": hardware_fingerprint(config.device, config.dtype)}

    def write() -> None:
        nonlocal header
        if header:
            write_json_atomic(store.run_dir / "sweep.json", header)
            header = None

    return write


class SerialExecutor:
    """Every cell in this process, one after another: the default, and what a sweep always did."""

    @contextmanager
    def session(self, config: SweepConfig):
        yield

    def run(self, config: SweepConfig, groups: list[CellGroup], store: ResultStore, started) -> None:
        speeds: dict = {}  # timings of random-id latency batches, shared by the tasks of this sweep
        for group in groups:
            prepared = prepare_group(config, group)
            started()
            bench, source = latency_bench(config, prepared), row_source(prepared)
            for speedup, key in tqdm(
                group.todo.items(), desc=group.label, disable=not config.progress, unit="cell"
            ):
                measured = measure_cell(config, group.cells, prepared, speedup, bench=bench, speeds=speeds)
                store.append(finish_row(config, group.cells, key, speedup, source, measured))


def prepare_group(config: SweepConfig, group: CellGroup):
    """The group's ``Prepared``: its protocol loads the model and data, fine-tunes (or takes the cached
    fine-tune) with the group's seed, and fits the method."""
    seeded = replace(config, train=replace(config.train, seed=group.cells["seed"]))
    prepared = group.protocol.prepare(
        seeded, group.cells["model"], group.task, METHODS.get(group.cells["method"])
    )
    prepared.loaded.model.to(DTYPES[config.dtype])  # after training: fine-tunes stay float32 (``dtype``)
    return prepared


def row_source(prepared) -> dict:
    """What every row of a group says about where its model and data came from (small: the Ray executor
    sends it back to the driver, which writes the rows)."""
    loaded = prepared.loaded
    return {
        "checkpoint": loaded.checkpoint,
        "checkpoint_verified": loaded.verified,
        "weights": loaded.weights,
        "data": prepared.context.get("data", {}),
        "train": prepared.context.get("train", {}),
    }


@dataclass
class LatencyBench:
    """What a group's timings share: the stock dense reference, the latency batch and its dense FLOPs."""

    stock: Any
    ids: torch.Tensor
    batch: dict
    flops_dense: int


def latency_bench(config: SweepConfig, prepared) -> LatencyBench:
    loaded = prepared.loaded
    stock = stock_copy(loaded.model)
    ids = latency_batch(
        loaded.tokenizer,
        prepared.texts,
        config.batch_size,
        prepared.seq_len or config.max_length,
        loaded.model.config.vocab_size,
    )
    batch = {
        key: value.to(config.device)
        for key, value in family_for(loaded.model).latency_inputs(loaded.model, ids).items()
    }
    with torch.no_grad():
        flops_dense = count_flops(lambda: stock(**batch))  # the same for every cell
    return LatencyBench(stock, ids, batch, flops_dense)


PARTS = ("quality", "timing")


def measure_cell(
    config: SweepConfig,
    cells: dict,
    prepared,
    speedup: float,
    parts=PARTS,
    bench: LatencyBench | None = None,
    speeds: dict | None = None,
) -> dict:
    """One cell's measured columns, the one cell function of both executors: the model pruned at
    ``speedup``, then its quality and/or its timing (``parts``: the serial sweep measures both in turn,
    the Ray executor each in its own task, timing alone on its machine).  The timing part names the machine
    it ran on (``hardware``) and when (``timing_window_s``: start and end, Unix seconds)."""
    loaded = prepared.loaded
    model = prune(
        loaded.model, method=cells["method"], speedup=speedup, speedup_model=config.speedup_model
    ).eval()
    measured = prepared.quality(loaded) if "quality" in parts else {}
    if "timing" in parts:
        bench = latency_bench(config, prepared) if bench is None else bench
        shared = _shared_timing_key(cells, loaded, prepared, bench.ids, speedup)
        timed = _timed(
            model,
            bench.stock,
            bench.batch,
            config,
            _generates(loaded.model),
            {} if speeds is None else speeds,
            shared,
            cells["task"],
        )
        measured.update(
            timed,
            flops_dense=bench.flops_dense,
            hardware=hardware_fingerprint(config.device, config.dtype),
        )
    return measured


def finish_row(
    config: SweepConfig, cells: dict, key: str, speedup: float, source: dict, measured: dict
) -> dict:
    """The results row of a measured cell, as the driver appends it."""
    row = {
        "cell_key": key,
        "model": cells["model"],
        "checkpoint": source["checkpoint"],
        "checkpoint_verified": source["checkpoint_verified"],
        "weights": source["weights"],
        "task": cells["task"],
        "protocol": cells["protocol"],
        "method": cells["method"],
        "speedup": speedup,
        "speedup_model": config.speedup_model,
        "seed": cells["seed"],
        "dtype": config.dtype,
        "identity": cells["identity"],
        "schema": RESULTS_SCHEMA,
    }
    row.update(measured)
    row.update(
        data=source["data"],
        train=source["train"],
        timestamp=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        harness_version=__version__,
    )
    return row


def _shared_timing_key(cells: dict, loaded, prepared, ids, speedup: float):
    """Cells whose latency batch is random ids (zero-shot and prompt protocols) time the same work in every
    task: the same weights, method and speedup on the same ids.  They share one measurement within a sweep
    rather than repeat minutes of identical timing per task (on a CPU, smollm2's 1,024-token TTFT rounds
    took most of a cell); ``latency_timed_with`` names the task whose cell took it.  Text batches (fine-tuned
    cells) differ per task and are timed per cell."""
    if prepared.texts is not None:
        return None
    return (
        cells["model"],
        loaded.checkpoint,
        loaded.weights,
        cells["method"],
        cells["seed"],
        speedup,
        tuple(ids.shape),
    )


def _timed(model, stock, batch, config, generates: bool, speeds: dict, key, task: str) -> dict:
    """The row's speed columns: forward latency, FLOPs and (decoders with an LM head) generation speed."""
    if key is not None and key in speeds:
        return speeds[key]
    start = time.time()
    timed = _speed(model, stock, batch, config)
    if generates:
        timed.update(_generation_speed(model, stock, batch, config))
    timed["timing_window_s"] = [start, time.time()]  # when, in Unix seconds: timings must never overlap
    if key is not None:
        speeds[key] = timed = {**timed, "latency_timed_with": task}
    return timed


@torch.no_grad()
def _speed(model, stock, batch, config) -> dict:
    timings, busy = quietest_latency(
        {"dense": lambda: stock(**batch), "pruned": lambda: model(**batch)},
        warmup=config.warmup,
        repeats=config.repeats,
        device=config.device,
    )
    flops_measured = count_flops(lambda: model(**batch))
    memory = {  # after the timing's warm-up: a first call's one-time allocations are not the forward's
        "peak_memory_mb": peak_memory_mb(lambda: model(**batch), config.device),
        "dense_peak_memory_mb": peak_memory_mb(lambda: stock(**batch), config.device),
    }
    forward = model.last_forward
    predicted = model.predicted_latency()  # of the latency batch, on this machine's calibration (if any)
    kept = [sum(len(sample) for sample in layer) / len(layer) for layer in model.last_kept]
    pruned_t, dense_t = timings["pruned"], timings["dense"]
    return {
        "predicted_speedup": forward.realised_speedup,
        "measured_speedup": dense_t.median_ms / pruned_t.median_ms,
        "flops_measured": flops_measured,
        "flops_analytic": forward.pruned_flops,
        "latency_ms": pruned_t.median_ms,
        "latency_p10_ms": pruned_t.p10_ms,
        "latency_p90_ms": pruned_t.p90_ms,
        "dense_latency_ms": dense_t.median_ms,
        "predicted_latency_ms": predicted and predicted[1],
        "predicted_dense_latency_ms": predicted and predicted[0],
        "predicted_wallclock_speedup": predicted and predicted[0] / predicted[1],
        "batch_size": config.batch_size,
        "seq_len": batch["input_ids"].shape[1],
        "threads": torch.get_num_threads(),
        "device": config.device,
        "kept_tokens": kept,
        "latency_repeats": pruned_t.repeats,
        "host_busy_cores": busy,
        "latency_clamped": forward.clamped,
        **memory,
    }


def _generates(model) -> bool:
    """A decoder with an LM head: time to first token is what its users wait for (a classification head,
    or an encoder-decoder, has its forward latency only)."""
    return family_for(model).kind == "decoder" and model.can_generate()


@torch.no_grad()
def _generation_speed(model, stock, batch, config) -> dict:
    """TTFT and decode tokens/s through ``generate`` on the latency batch, pruned against stock dense."""
    room = model.max_length - 1 - DECODE_TOKENS  # GPT-2 at --max-length 1024 has no position left to generate
    prompt = {
        "input_ids": batch["input_ids"][:, -room:],
        "attention_mask": batch["attention_mask"][:, -room:],
    }
    calls, clocks = generation_calls(model, stock, prompt, DECODE_TOKENS, config.device)
    timings, busy = quietest_latency(calls, warmup=1, repeats=config.repeats, device=config.device)
    return {
        **generation_speeds(timings, clocks, batch["input_ids"].shape[0], DECODE_TOKENS),
        "generation_prompt_len": prompt["input_ids"].shape[1],
        "generation_busy_cores": busy,
    }
