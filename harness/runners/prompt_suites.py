"""Prompt suites: each task in three prompt modes (zero-shot, few-shot, instruction), as lm-eval task files.

The task files in ``tasks/`` are the one source of truth: a file whose ``metadata`` names a
``harness_task`` and a ``prompt_mode`` belongs to that task's suite (``tasks/build_prompts.py`` writes
them; instruction mode has one file per template).  ``suites()`` reads them, so a new template or task
is a new file, and stock ``lm_eval --include_path tasks --tasks harness_fewshot`` runs the same files.

``harness run --prompts zero-shot,few-shot,instruction`` evaluates each mode as its own protocol
(``prompts/<mode>``): per speedup the mode's lm-eval tasks run through the pruned model (instruction:
every template, reported as their mean and spread); latency is measured on a batch of the mode's own
prompts at their mean length (long prompts gain more from elimination, so one fixed batch would hide
the difference between modes); and ``kept_segments`` records, per layer, the share of kept tokens
that came from each prompt segment (instruction, demonstrations, the asked input, the options).
"""

from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.contracts.protocol import NO_QUALITY, EvalProtocol, Prepared
from harness.registry import HarnessError
from harness.runners.lm_training import lm_train_identity, tuned_model

MODES = ("zero-shot", "few-shot", "instruction")
SEGMENTS = ("instruction", "demonstrations", "input", "options")
FEWSHOT_SEED = 1234
"""lm-eval's default ``fewshot_random_seed``: the demonstrations the analysis sees are lm-eval's."""
SEGMENT_PROMPTS = 8
"""Prompts per cell whose kept tokens are traced to their segments."""
OPTIONS_MARK = "OPTIONS:"


@dataclass(frozen=True)
class SuiteFile:
    task: str
    """The lm-eval task name."""
    mode: str
    template: int | None
    path: Path


def _tasks_dir() -> Path:
    from harness.runners.lm_eval_bridge import TASKS_DIR

    return TASKS_DIR


def read_task_file(path: Path) -> dict:
    """A task file's config (includes resolved, ``!function`` left unresolved), or one clear error."""
    from lm_eval.tasks._yaml_loader import load_yaml

    try:
        config = load_yaml(path, resolve_func=False, recursive=True)
    except Exception as exc:  # yaml's and lm-eval's many error types, for one cause: the file is broken
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise HarnessError(f"task file {path} does not parse: {first}") from None
    return config


@functools.cache
def suites(folder: Path | None = None) -> dict[str, dict[str, tuple[SuiteFile, ...]]]:
    """harness task -> prompt mode -> its lm-eval task files (instruction: one per template, in order)."""
    found: dict[str, dict[str, list[SuiteFile]]] = {}
    for path in sorted((folder or _tasks_dir()).glob("*.yaml")):
        config = read_task_file(path)
        meta = config.get("metadata") or {}
        if "prompt_mode" not in meta:
            continue
        if meta["prompt_mode"] not in MODES:
            raise HarnessError(
                f"task file {path}: prompt_mode {meta['prompt_mode']!r} is not one of {', '.join(MODES)}"
            )
        entry = SuiteFile(config["task"], meta["prompt_mode"], meta.get("template"), path)
        found.setdefault(meta["harness_task"], {}).setdefault(entry.mode, []).append(entry)
    return {
        task: {mode: tuple(sorted(files, key=lambda f: f.template or 0)) for mode, files in modes.items()}
        for task, modes in found.items()
    }


def check_prompts(modes: list[str] | None, protocol: str | None = None, chat_template: bool = False) -> None:
    """--prompts names known modes, and is not combined with --protocol (each mode is its own protocol)
    other than finetune-lm (the modes then run on the tuned model, ``finetune-lm/prompts/<mode>``);
    --chat-template needs the instruction mode, the one it renders."""
    if chat_template and "instruction" not in (modes or ()):
        raise HarnessError("--chat-template renders the instruction prompt mode; add --prompts instruction")
    if modes is None:
        return
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        raise HarnessError(f"unknown prompt mode {', '.join(map(repr, unknown))}; valid: {', '.join(MODES)}")
    if protocol not in (None, "finetune-lm"):
        raise HarnessError(
            "--prompts and --protocol exclude each other (each prompt mode is its own protocol), but for "
            "--protocol finetune-lm, which evaluates the modes on the tuned model"
        )


def suite_files(task: str, mode: str) -> tuple[SuiteFile, ...]:
    """The task files of one task's mode, or one clear error naming the modes it has."""
    suite = suites()
    if task not in suite:
        raise HarnessError(f"task {task!r} has no prompt suite; tasks with one: {', '.join(sorted(suite))}")
    if mode not in suite[task]:
        raise HarnessError(f"task {task!r} has no {mode} prompt mode; its modes: {', '.join(suite[task])}")
    return suite[task][mode]


@functools.cache
def task_datasets(name: str):
    """A registered task's labelled splits as a ``datasets.DatasetDict``, loaded once per process.

    The GLUE suites' ``offline_data.glue`` hook reads them through here, and ``PromptMode.check`` loads
    them before a run starts, so a hub task that cannot be reached fails in one line, before any model
    loads or result file is written (and is then not loaded a second time)."""
    import datasets

    from harness.data.tasks import HubDataError, load_task

    try:
        data = load_task(name)
    except HubDataError as exc:
        offline = ", ".join(task for task in suites() if _offline(task))
        raise HarnessError(
            f"task {name!r}: its prompt suite needs {exc.source}, and "
            f"{exc.why}; prompt suites that need no hub: {offline}"
        ) from None
    return datasets.DatasetDict(
        {
            role: datasets.Dataset.from_pandas(frame, preserve_index=False)
            for role, frame in data.splits.items()
        }
    )


def _offline(task: str) -> bool:
    """Whether a suite's task has its data without the hub (a pinned asset)."""
    from harness.data.tasks import TASKS

    return task in TASKS and TASKS.get(task).hub is None


def check_data(task) -> None:
    """A hub task's data must be loadable (``task_datasets``: one clear line when it is not)."""
    if task.hub is not None:
        task_datasets(task.name)


@functools.cache
def load_lm_task(name: str):
    """The lm-eval task object of one of the harness's task files (its dataset loaded)."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(_tasks_dir()), include_defaults=False)
    return manager.load([name])["tasks"][name]


def check_num_fewshot(task: str, num_fewshot: int | None) -> None:
    """--num-fewshot must be >= 0 and at most the examples the task's few-shot split can offer."""
    if num_fewshot is None:
        return
    if num_fewshot < 0:
        raise HarnessError(f"--num-fewshot must be >= 0, got {num_fewshot}")
    lm_task = load_lm_task(suite_files(task, "few-shot")[0].task)
    pool = len(lm_task.fewshot_docs())
    available = pool - 1 if lm_task.fewshot_cfg.split == lm_task.config.test_split else pool
    if num_fewshot > available:
        raise HarnessError(
            f"--num-fewshot {num_fewshot} is more than task {task!r} has: its few-shot split "
            f"offers {available} examples (the asked item excluded)"
        )


# --- prompts and their segments -------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    text: str
    spans: tuple[tuple[str, int, int], ...]
    """(segment, start, end) character spans covering ``text``."""


def segment_prompt(context: str, description: str, asked: str, demonstrations: bool = True) -> Prompt:
    """Split a prompt into its segments by character span.

    lm-eval builds ``context`` as the description (the instruction), the demonstrations, then the asked
    item's text; within the asked text, the block from ``OPTIONS:`` to the answer cue lists the options.
    A prompt without demonstrations has only the instruction before the asked text: through a chat
    template that is the system turn and the markup around it, all counted as instruction."""
    start = context.rfind(asked)
    if start < 0:
        raise HarnessError("a prompt does not end with its document's text; the segments cannot be found")
    at = context.find(description) if description else -1
    head = start if not demonstrations else at + len(description) if 0 <= at < start else 0
    options = context.rfind(OPTIONS_MARK, start)
    cue = context.rfind("\n", start, start + len(asked)) if options >= 0 else -1
    spans = [("instruction", 0, head), ("demonstrations", head, start)]
    if options >= 0 and cue > options:
        spans += [("input", start, options), ("options", options, cue), ("input", cue, len(context))]
    else:
        spans.append(("input", start, len(context)))
    return Prompt(context, tuple(span for span in spans if span[2] > span[1]))


def build_prompts(name: str, num_fewshot: int | None, limit: int | None, tokenizer=None) -> list[Prompt]:
    """The contexts lm-eval builds for the first ``limit`` documents of task ``name`` (its seed), with
    ``num_fewshot`` demonstrations (None: the task file's own count); rendered through ``tokenizer``'s
    chat template when one is given, as lm-eval's ``apply_chat_template`` renders them."""
    lm_task = load_lm_task(name)
    lm_task.set_fewshot_seed(FEWSHOT_SEED)
    shots = num_fewshot if num_fewshot is not None else (lm_task.config.num_fewshot or 0)
    docs = list(lm_task.eval_docs)[:limit] if limit else list(lm_task.eval_docs)
    description = lm_task.config.description or ""
    chat = (
        {} if tokenizer is None else {"apply_chat_template": True, "chat_template": _chat_renderer(tokenizer)}
    )
    return [
        segment_prompt(
            lm_task.fewshot_context(doc, shots, **chat),
            description,
            lm_task.doc_to_text(doc),
            demonstrations=shots > 0,
        )
        for doc in docs
    ]


def _chat_renderer(tokenizer):
    """Messages -> text through the tokenizer's chat template, as lm-eval's ``HFLM.apply_chat_template``."""

    def render(messages, add_generation_prompt: bool = True) -> str:
        return tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    return render


def token_segments(tokenizer, prompt: Prompt) -> tuple[list[int], list[str]]:
    """Token ids of a prompt and each token's segment (by the character its span starts at; a special
    token, which covers no text, such as T5's closing </s>, belongs to the asked input)."""
    encoded = tokenizer(prompt.text, return_offsets_mapping=True, add_special_tokens=True)
    labels = []
    for start, end in encoded["offset_mapping"]:
        found = (name for name, lo, hi in prompt.spans if lo <= start < hi)
        labels.append(next(found, "input") if end > start else "input")
    return encoded["input_ids"], labels


@torch.no_grad()
def kept_segments(model, tokenizer, prompts: list[Prompt]) -> dict[str, list[float]]:
    """Per segment, per layer: the share of the kept tokens that came from it (mean over prompts).

    Each prompt runs alone (no padding), as the model's own forward keeps it; ``"input tokens"`` adds
    each segment's share of the prompt before any layer."""
    totals: dict[str, list[float]] = {}
    device = next(model.parameters()).device
    for prompt in prompts:
        ids, labels = token_segments(tokenizer, prompt)
        model(input_ids=torch.tensor([ids], device=device), **_decoder_start(model, device))
        layers = [[labels[p] for p in layer[0]] for layer in model.last_kept]
        for index, kept in enumerate([labels, *layers]):
            for segment in SEGMENTS:
                share = kept.count(segment) / len(kept)
                totals.setdefault(segment, [0.0] * (len(layers) + 1))[index] += share / len(prompts)
    return totals


def _decoder_start(model, device) -> dict:
    """An encoder-decoder's forward also needs its first decoder token."""
    if not model.config.is_encoder_decoder:
        return {}
    start = model.config.decoder_start_token_id
    return {"decoder_input_ids": torch.full((1, 1), 0 if start is None else start, device=device)}


# --- the protocols ----------------------------------------------------------------------------------------


def combine(per_template: list[dict], main: str) -> dict:
    """The instruction mode's row: the mean over templates, their spread (sample standard deviation, and
    the range) and a standard error.  The templates score the same documents, so their errors are
    correlated: the mean of the templates' standard errors is reported, a bound on the mean's."""
    scores = [metrics[main] for metrics in per_template]
    errors = [metrics.get(f"{main}_stderr") for metrics in per_template]
    spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
    return {
        main: statistics.fmean(scores),
        f"{main}_stderr": statistics.fmean(errors) if None not in errors else None,
        "template_spread": spread,
        "template_min": min(scores),
        "template_max": max(scores),
    }


class PromptMode(EvalProtocol):
    """One prompt mode of the suites; registered as ``prompts/<mode>``."""

    kinds = ("decoder", "encoder-decoder")

    def __init__(self, mode: str, tuned: bool = False):
        self.mode, self.tuned, self.trains = mode, tuned, tuned
        self.name = f"finetune-lm/prompts/{mode}" if tuned else f"prompts/{mode}"
        self.description = (
            f"the task's {mode} prompt suite through lm-eval (tasks/*.yaml, metadata.prompt_mode)"
            + (", on the model tuned by --protocol finetune-lm" if tuned else "")
        )

    def train_identity(self, config) -> dict:
        return lm_train_identity(config) if self.tuned else {}

    def check(self, family, task) -> None:
        if family.kind not in self.kinds:
            raise HarnessError(
                f"--prompts needs a decoder or an encoder-decoder; {family.name!r} models are {family.kind}s"
            )
        suite_files(task.name, self.mode)
        check_data(task)

    def prepare(self, config, model_name, task, method) -> Prepared:
        from harness.models.catalog import load_causal_lm

        train = None
        if self.tuned and config.weights == "pretrained":
            loaded, train = tuned_model(config, model_name, method)
        else:
            loaded = load_causal_lm(model_name, config.weights)
            loaded.model.to(config.device)
        files = suite_files(task.name, self.mode)
        shots = 0
        if self.mode == "few-shot":
            shots = (
                config.num_fewshot
                if config.num_fewshot is not None
                else load_lm_task(files[0].task).config.num_fewshot
            )
        chat = bool(config.chat_template and self.mode == "instruction")
        if chat and not getattr(loaded.tokenizer, "chat_template", None):
            raise HarnessError(
                f"--chat-template: {model_name}'s tokenizer has no chat template (smollm2's has); "
                f"run without --chat-template"
            )
        prompts = build_prompts(files[0].task, shots, config.max_eval, loaded.tokenizer if chat else None)
        lengths = [len(token_segments(loaded.tokenizer, p)[0]) for p in prompts] if loaded.tokenizer else []
        mean_tokens = statistics.fmean(lengths) if lengths else None
        describe = {
            "prompt_mode": f"{self.mode} (tuned)" if self.tuned else self.mode,
            "chat_template": chat,
            "num_fewshot": shots,
            "mean_prompt_tokens": mean_tokens,
        }
        context = {"data": {"lm_eval_tasks": [f.task for f in files], "limit": config.max_eval}}
        if train is not None:
            context["train"] = train
        seq_len = min(config.max_length, round(mean_tokens)) if mean_tokens else None
        texts = [p.text for p in prompts]
        if config.weights == "random":
            return Prepared(
                loaded,
                lambda loaded: {**NO_QUALITY, **describe},
                texts=texts,
                context=context,
                seq_len=seq_len,
            )
        return Prepared(
            loaded,
            lambda loaded: {**self.quality(loaded, config, files, describe, prompts), **describe},
            texts=texts,
            context=context,
            seq_len=seq_len,
        )

    def quality(self, loaded, config, files, describe, prompts) -> dict:
        from harness.runners.lm_eval_bridge import evaluate

        names = [f.task for f in files]
        results = evaluate(
            loaded.model,
            loaded.tokenizer,
            names,
            batch_size=config.batch_size,
            limit=config.max_eval,
            num_fewshot=describe["num_fewshot"] if self.mode == "few-shot" else None,
            apply_chat_template=describe["chat_template"],
        )
        per_template = [results[name] for name in names]
        metrics = combine(per_template, "acc") if self.mode == "instruction" else dict(per_template[0])
        realised = [r.get("eval_predicted_speedup") for r in per_template]
        segments = (
            kept_segments(loaded.model, loaded.tokenizer, prompts[:SEGMENT_PROMPTS])
            if self.mode != "zero-shot"
            else None
        )
        for key in ("eval_predicted_speedup", "eval_clamped", "n"):
            metrics.pop(key, None)
        return {
            "metrics": metrics,
            "main_metric": "acc",
            "score": metrics["acc"],
            "eval_predicted_speedup": statistics.fmean(r for r in realised if r) if any(realised) else None,
            "eval_documents": per_template[0].get("n"),
            "kept_segments": segments,
            "template_scores": [metrics["acc"] for metrics in per_template]
            if self.mode == "instruction"
            else None,
            "eval_clamped": sum(r.get("eval_clamped") or 0 for r in per_template),
        }


def register(protocols) -> None:
    for tuned in (False, True):
        for mode in MODES:
            protocol = PromptMode(mode, tuned)
            protocols.register(protocol.name, protocol)
