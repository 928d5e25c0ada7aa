"""lm-evaluation-harness plugin: the ``harness`` model type runs lm-eval tasks through a pruned decoder,
or a pruned encoder-decoder (Flan-T5, through lm-eval's seq2seq backend).

It runs every pruning method (``method=...``); ``acc``, its first name, stays registered as an alias.

Command line (lm-eval's own flags and output files; ``tasks/`` is added as ``--include_path``)::

    harness lm-eval --model harness --model_args pretrained=./my-gpt2,speedup=2,method=acc,profile=tilt,r_min=0 \\
        --tasks rt-polarity-zs,boolq-zs,heldout-ppl --limit 100 --device cpu --output_path runs/lm-eval

Python, around a model you already hold (pruned or not; ``PrunedLM`` prunes it in place)::

    import lm_eval
    from lm_eval.tasks import TaskManager
    from harness.runners.lm_eval_bridge import PrunedLM, TASKS_DIR

    lm = PrunedLM(pretrained=model, tokenizer=tokenizer, speedup=2.0, batch_size=8)
    results = lm_eval.simple_evaluate(model=lm, tasks=["rt-polarity-zs"],
                                      task_manager=TaskManager(include_path=str(TASKS_DIR)))

    # or, flattened to {task: {metric: value, metric_stderr: value, "n": docs}}:
    from harness.runners.lm_eval_bridge import evaluate
    evaluate(model, tokenizer, ["rt-polarity-zs", "heldout-ppl"], limit=200)

Pruning options in ``model_args`` (or ``PrunedLM`` keywords) are the fields of
``harness.pruning.pruner.PruningSettings`` (``method``, ``speedup``, ``profile``, ``r_min``,
``protect_first``, ``protect_last``, ``min_keep``, ``seed``).  They are validated before the model is loaded; a bad
value is a ``HarnessError`` with a one-line message.  Options not given keep the model's own settings
when it is already pruned, else the defaults of ``harness.prune``.  ``device`` defaults to ``cpu``; on the
command line lm-eval's default is ``cuda:0``, and ``harness lm-eval`` without ``--device`` on a machine
without CUDA runs on the CPU, saying so (as stock ``--model hf`` does).

How requests reach the pruned model (written against lm-eval 0.4.13's ``HFLM``):

* ``loglikelihood`` and ``loglikelihood_rolling`` both end in ``HFLM._loglikelihood_tokens``, which
  right-pads each batch with zeros (``pad_and_concat(..., padding_side="right")``, whatever the
  tokenizer's padding side) and calls ``_model_call(batch)`` without an attention mask, then reads the
  logits of each request's last ``len(continuation)`` input positions.  ``PrunedLM`` tags the request tuples
  so that ``_model_call`` knows which requests form the batch, checks that the batch is exactly their
  right-padded inputs, and calls the model with the matching attention mask inside
  ``model.protect_tail(continuation lengths)``: padding never counts as text, and every logit
  lm-eval reads is computed.  The answer's tokens in the input (the continuation but its last token)
  are kept, and their queries score nothing (``ScoreInputs.queries``): the context is pruned exactly
  as its own prefill would be, its last token being the last-token methods' query, so a method never
  selects the context by looking at the answer it is scored on.  For rolling windows the continuation
  is the whole window, so a rolling perplexity runs (nearly) dense: a pruned position has no logits to
  score.  The harness's
  ``heldout-ppl`` therefore scores each document's last words given the (pruned) rest.
* Encoder-decoders (``backend == "seq2seq"``) use ``HFLM``'s seq2seq paths unchanged: the context is
  the encoder's input (padded with its attention mask, pruned), the continuation the decoder's labels
  (dense; it cross-attends to the kept encoder states); ``generate_until`` encodes the prompt once.
* ``generate_until`` uses ``HFLM`` unchanged (left-padded prompts, ``model.generate`` with the cache):
  the prompt's prefill is pruned, its KV cache holds the kept tokens, and decoding drops nothing.
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
from pathlib import Path
from typing import Any

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from harness.registry import HarnessError


def _shipped_tasks() -> Path:
    """The repository's tasks/ ships as the package ``harness._tasks`` (pyproject.toml), so the import system
    finds it where it was installed: in a wheel and in an editable install alike, never beside the source."""
    from importlib import resources

    try:
        return Path(str(resources.files("harness._tasks")))
    except ModuleNotFoundError:  # an editable install made before tasks/ was mapped into the package
        raise HarnessError(
            "the harness's lm-eval task files (package harness._tasks) are not installed: "
            "reinstall the harness (pip install -e . in a checkout, or make)"
        ) from None


TASKS_DIR = _shipped_tasks()
"""The lm-eval task configurations shipped with the harness (``rt-polarity-zs``, ``boolq-zs``, ``heldout-ppl``)."""

MODEL_TYPES = ("harness", "acc")
"""The lm-eval model type's names: ``harness`` (it runs every method), ``acc`` (its first name, kept)."""
LM_EVAL_VERSION = "0.4.13"  # the HFLM internals relied on above; checked at run time, see _batch_layout


def parse_pruning_options(options: dict[str, Any]) -> dict[str, Any]:
    """Typed, validated pruning options from ``model_args`` values (strings or numbers); None = not given."""
    from harness.pruning.pruner import PruningSettings, check_speedup, pruning_options

    types = pruning_options()
    parsed: dict[str, Any] = {}
    for name, value in options.items():
        if value is None:
            continue
        if name not in types:
            raise HarnessError(f"unknown pruning option {name!r}; valid: {', '.join(types)}")
        if name == "speedup":
            parsed[name] = check_speedup(value)
        elif types[name] is str:
            parsed[name] = str(value)
        elif types[name] is float:
            parsed[name] = _number(name, value, "a number within [0, 1]")
        else:
            number = _number(name, value, "a whole number >= 0")
            if number != int(number):
                raise HarnessError(f"{name} must be a whole number >= 0, got {value!r}")
            parsed[name] = int(number)
    # names (method, profile) and ranges (r_min, protect_*) are PruningSettings' own checks
    PruningSettings(**{**parsed, "speedup": parsed.get("speedup", 1.0)})
    return parsed


def _number(name: str, value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise HarnessError(f"{name} must be {what}, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise HarnessError(f"{name} must be {what}, got {value!r}") from None
    if not math.isfinite(number):
        raise HarnessError(f"{name} must be {what}, got {value!r}")
    return number


class _Request(tuple):
    """A ``(request strings, context tokens, continuation tokens)`` tuple that logs when it is unpacked.

    ``HFLM._loglikelihood_tokens`` unpacks each request of a batch once, in row order, just before it
    builds the padded batch and calls ``_model_call``; the last ``batch`` entries of the log are
    therefore that batch's requests.  (Indexing, as its sort and grouping keys do, is not logged.)
    """

    def __new__(cls, request, log: list):
        obj = super().__new__(cls, request)
        obj._log = log
        return obj

    def __iter__(self):
        self._log.append(self)
        return super().__iter__()

    def __reduce__(self):  # pickles (e.g. into lm-eval's caches) as the plain tuple
        return (tuple, (tuple(self),))


@register_model(*MODEL_TYPES)
class PrunedLM(HFLM):
    """lm-eval's ``HFLM`` around a model pruned with ``harness.prune`` (decoders: GPT-2, Llama; encoder-decoders:
    T5), any method."""

    _request_log: list | None = None  # the tagged requests unpacked so far, while _loglikelihood_tokens runs
    stats = None  # ForwardStats of the loglikelihood forwards so far (analytic FLOPs, clamped samples)

    def __init__(self, pretrained, device: str | None = "cpu", **kwargs):
        from harness.api import prune
        from harness.measure.hardware import check_device
        from harness.pruning.pruned_model import PrunedModelMixin
        from harness.pruning.pruner import ForwardStats, pruning_options

        options = parse_pruning_options({name: kwargs.pop(name, None) for name in pruning_options()})
        self.stats = ForwardStats()
        super().__init__(pretrained=pretrained, device=check_device(device or "cpu"), **kwargs)
        model = self._model
        settings = model.pruning.to_dict() if isinstance(model, PrunedModelMixin) else {}
        settings.update(options)
        target = settings.pop("speedup", 1.0)
        prune(model, speedup=target, **settings)

    @property
    def pruning(self):
        """The pruned model's settings (``PruningSettings``)."""
        return self.model.pruning

    def set_speedup(self, speedup) -> None:
        self.model.set_speedup(speedup)

    def get_model_info(self) -> dict:
        return {**super().get_model_info(), "harness_pruning": self.model.pruning.to_dict()}

    # --- loglikelihood: tell the model which rows are text and which logits will be read ----------------

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        log: list = []
        # seq2seq: the context is the encoder input, the continuation the decoder's; nothing to tag
        tagged = [_Request(request, log) for request in requests] if self.backend == "causal" else requests
        outer, self._request_log = self._request_log, log
        try:
            return super()._loglikelihood_tokens(tagged, disable_tqdm=disable_tqdm, override_bs=override_bs)
        finally:
            self._request_log = outer

    def _detect_batch_size(self, requests=None, pos: int = 0):
        # its probe batches are not requests: run them untagged
        outer, self._request_log = self._request_log, None
        try:
            return super()._detect_batch_size(requests, pos)
        finally:
            self._request_log = outer

    def _model_call(self, inps: torch.Tensor, attn_mask=None, labels=None) -> torch.Tensor:
        log = self._request_log
        if log is None or attn_mask is not None or labels is not None:
            logits = super()._model_call(inps, attn_mask=attn_mask, labels=labels)
            if log is not None and self.backend == "seq2seq":  # a loglikelihood batch: its encoder was pruned
                self.stats = self.stats + self.model.last_forward
            return logits
        batch = inps.shape[0]
        rows, log[:] = log[-batch:], []
        lengths, tails = self._batch_layout(inps, rows)
        positions = torch.arange(inps.shape[1], device=inps.device)
        mask = (positions.unsqueeze(0) < torch.tensor(lengths, device=inps.device).unsqueeze(1)).long()
        with (
            torch.no_grad(),
            torch.autocast(
                device_type=self.device.type,
                dtype=self.mixed_precision_dtype,
                enabled=self.mixed_precision_dtype is not None,
            ),
            self.model.protect_tail(tails),
        ):
            logits = self.model(input_ids=inps, attention_mask=mask, use_cache=False).logits
        self.stats = self.stats + self.model.last_forward
        return logits

    @property
    def predicted_speedup(self) -> float | None:
        """FLOPs(dense)/FLOPs(pruned) over the loglikelihood forwards so far (the FLOP model's count;
        protected continuations and samples too short for the target make it lower than the target)."""
        return self.stats.realised_speedup

    def _batch_layout(self, inps: torch.Tensor, rows: list) -> tuple[list[int], list[int]]:
        """Per row: the input length (the rest is padding) and how many trailing logits lm-eval reads.

        Rebuilds each row as ``HFLM._loglikelihood_tokens`` does (context + continuation, left-truncated
        to ``max_length + 1``, last token dropped, right-padded with 0) and insists the batch is exactly
        that, so a change in lm-eval's batching fails loudly instead of protecting the wrong positions.
        """
        width = inps.shape[1]
        lengths, tails = [], []
        mismatch = len(rows) != inps.shape[0]
        for row, request in zip(inps.tolist(), rows):
            context, continuation = request[1], request[2]  # indexing: not logged as an unpacking
            expected = (list(context) + list(continuation))[-(self.max_length + 1) :][:-1]
            if len(expected) > width or row[: len(expected)] != expected or any(row[len(expected) :]):
                mismatch = True
                break
            lengths.append(len(expected))
            tails.append(min(len(continuation), len(expected)))
        if mismatch or max(lengths) != width:
            raise HarnessError(
                "the harness model type could not match a loglikelihood batch to its requests: lm-eval's "
                f"HFLM._loglikelihood_tokens batches differently from lm-eval {LM_EVAL_VERSION}, which "
                "harness.runners.lm_eval_bridge was written for"
            )
        return lengths, tails


# --- the command line --------------------------------------------------------------------------------

_SUBCOMMANDS = ("run", "ls", "validate")


def _with_include_path(argv: list[str]) -> list[str]:
    """``argv`` plus ``--include_path TASKS_DIR`` where lm-eval would accept it and none is given."""
    if any(arg == "--include_path" or arg.startswith("--include_path=") for arg in argv):
        return argv
    if argv and argv[0] in _SUBCOMMANDS:
        if len(argv) == 1 or any(arg in ("-h", "--help") for arg in argv):
            return argv
        return [*argv, "--include_path", str(TASKS_DIR)]
    if len(argv) >= 2:  # lm-eval's legacy form: no subcommand means "run"
        return ["run", *argv, "--include_path", str(TASKS_DIR)]
    return argv


def _check_model_arguments(argv: list[str]) -> list[str]:
    """Fail fast on a bad ``--limit``, an unknown ``--model``, bad ``--model harness`` pruning options, a
    ``pretrained=`` that cannot load and a device that is not here, before lm-eval indexes its ~15k task
    configs (lm-eval answers most of them with a traceback).  Returns ``argv``, with ``--device cpu``
    added where ``_device_or_cpu`` falls back.

    Parsed with lm-eval's own parser (``HarnessCLI``) and merged with a ``--config`` file as lm-eval
    merges them; anything it rejects is left for the real run to report, and the model is validated
    again when it is built.
    """
    args = _parsed_run(argv)
    if args is None:
        return argv
    given = _settings(args)
    _check_limit(given.get("limit"))
    model = str(given.get("model") or "hf")
    _check_model_type(model)
    model_args = given.get("model_args") or {}
    if isinstance(model_args, dict) and isinstance(model_args.get("pretrained"), str):
        _check_pretrained(model_args["pretrained"], tokenizer="tokenizer" not in model_args)
    if model not in MODEL_TYPES:
        return argv
    from harness.pruning.pruner import pruning_options

    if isinstance(model_args, dict):
        parse_pruning_options({key: value for key, value in model_args.items() if key in pruning_options()})
    return _device_or_cpu(argv, given.get("device"))


def _parsed_run(argv: list[str]):
    """``argv`` as lm-eval's own parser reads it, when it is a ``run``; None for ``ls`` and ``validate``,
    and where the parser refuses it (the real run reports that)."""
    try:
        from lm_eval._cli.harness import HarnessCLI

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            args = HarnessCLI()._parser.parse_args(argv)
    except (Exception, SystemExit):
        return None
    return args if getattr(args, "command", None) == "run" else None


def _settings(args) -> dict[str, Any]:
    """The run's settings as lm-eval's ``EvaluatorConfig.from_cli`` merges them: the ``--config`` YAML
    file's, then the command line's (those given: truthy or 0).  An unreadable config is lm-eval's to report."""
    import yaml

    given: dict[str, Any] = {}
    if getattr(args, "config", None):
        try:
            loaded = yaml.safe_load(Path(args.config).read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            loaded = None
        given.update(loaded if isinstance(loaded, dict) else {})
    given.update({key: value for key, value in vars(args).items() if value or value == 0})
    return given


def _check_limit(limit) -> None:
    """lm-eval reads a ``--limit`` below 1 as a share of each task's documents and from 1 on as a count,
    which it truncates: 0, a negative number, nan and inf end in a traceback deep in its document loop
    (or after the model loaded), and 2.5 would silently score 2 documents."""
    if limit is None:
        return
    number = type(limit) in (int, float)
    if not (number and (0 < limit < 1 or (1 <= limit < math.inf and limit == int(limit)))):
        raise HarnessError(
            "--limit must be a share of each task's documents in (0, 1) or a whole number of "
            f"documents >= 1, got {f'{limit:g}' if number else repr(limit)}"
        )


def _check_model_type(model: str) -> None:
    """An unknown ``--model`` is lm-eval's ValueError traceback, after it indexed its tasks."""
    from lm_eval.api.registry import model_registry

    if model not in model_registry:
        own = sorted(name for name in model_registry.keys() if name not in MODEL_TYPES)
        raise HarnessError(
            f"lm-eval has no model type {model!r}; the harness's is 'harness' (alias 'acc'), "
            f"lm-eval's own: {', '.join(own)}"
        )


def _device_or_cpu(argv: list[str], device) -> list[str]:
    """lm-eval's default device is ``cuda:0``, which stock ``--model hf`` leaves for the CPU where there is
    no CUDA: the harness model does the same, saying so in one line, where no device is given (command
    line or ``--config``), so that the README's command runs on a laptop.  A device that is given is
    checked now: ``--device cuda`` without CUDA is one line saying how to get it, not a silent CPU run."""
    from harness.measure.hardware import check_device

    if device is not None:
        check_device(str(device))
        return argv
    if torch.cuda.is_available():
        return argv
    print(
        f"harness: no --device given and no CUDA device here (torch {torch.__version__}): running on cpu",
        file=sys.stderr,
    )
    return [*argv, "--device", "cpu"]


def check_own_task(name: str, command: str) -> None:
    """``name`` must be one of the harness's task files (``tasks/*.yaml``): for any other name lm-eval's
    task manager raises a KeyError, and ``harness positions`` met it only after the model had loaded."""
    own = sorted(_own_tasks())
    if name not in own:
        raise HarnessError(
            f"unknown task {name!r} for {command}; valid (the lm-eval tasks in {TASKS_DIR}): {', '.join(own)}"
        )


def _check_pretrained(value: str, tokenizer: bool) -> None:
    """``pretrained=`` must be a checkpoint folder, or a hub id that is reachable or cached: lm-eval
    answers either mistake with a long traceback from transformers or huggingface_hub."""
    from harness.assets import resolve_checkpoint
    from harness.models.checkpoint_files import check_checkpoint_files

    folder = Path(value).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise HarnessError(f"pretrained={value} has no config.json; it is not a checkpoint folder")
        check_checkpoint_files(folder, f"pretrained={value}", tokenizer=tokenizer)
    elif folder.exists() or value.startswith((".", "/", "~")) or value.count("/") > 1:
        raise HarnessError(f"pretrained={value} is not a folder ({folder.resolve()} does not exist)")
    else:
        resolve_checkpoint(value)  # a hub id: one line when the hub is unreachable and it is not cached


def lm_eval_main(argv: list[str]) -> int:
    """``harness lm-eval ARGS``: lm-eval's own command line (``lm_eval.__main__.cli_evaluate``) with
    ``--model harness`` (alias ``acc``) registered and the harness's tasks on the include path.  Returns the exit code."""
    import lm_eval.__main__ as lm_eval_cli

    argv = _with_include_path(list(argv))
    saved = sys.argv
    try:
        argv = _check_model_arguments(argv)
        sys.argv = ["lm-eval", *argv]  # lm-eval's HarnessCLI parses sys.argv
        lm_eval_cli.cli_evaluate()
    except HarnessError as error:
        print(f"harness: error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # lm-eval checks task names before it loads the model
        if not str(error).startswith("Tasks not found"):
            raise
        print(
            f"harness: error: lm-eval {error}; the harness's own tasks are {', '.join(sorted(_own_tasks()))}, "
            f"and 'harness lm-eval ls tasks' lists lm-eval's",
            file=sys.stderr,
        )
        return 2
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved
    return 0


# --- the harness's own sweep -------------------------------------------------------------------------


def _own_tasks() -> set[str]:
    return {path.stem for path in TASKS_DIR.glob("*.yaml")}


def evaluate(
    model,
    tokenizer,
    tasks: list[str],
    *,
    batch_size: int = 8,
    limit: int | float | None = None,
    bootstrap_iters: int = 1000,
    num_fewshot: int | None = None,
    include_path: str | Path | None = None,
    apply_chat_template: bool = False,
) -> dict[str, dict[str, Any]]:
    """Run lm-eval ``tasks`` on ``model`` (pruned in place at speedup 1 if it is not pruned yet).

    Returns ``{task: {metric: value, metric + "_stderr": value or None, "n": documents scored,
    "eval_predicted_speedup": FLOPs(dense)/FLOPs(pruned) of its loglikelihood forwards}}``; a metric
    computed with a filter other than lm-eval's ``none`` is named ``metric,filter``.
    ``bootstrap_iters`` only matters for bootstrapped metrics (lm-eval's default of 100000 takes minutes);
    accuracy has a closed-form standard error and the perplexities have none (None).
    ``include_path``: a folder of further task YAMLs (a plugin's), searched beside the harness's own.
    The model runs on the device it is on.  ``apply_chat_template``: render prompts with the tokenizer's
    chat template (lm-eval's ``--apply_chat_template``).
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    if not tasks:
        raise HarnessError("no lm-eval tasks given")
    folders = [str(TASKS_DIR), *([str(include_path)] if include_path else [])]
    own = _own_tasks() | ({p.stem for p in Path(include_path).glob("*.yaml")} if include_path else set())
    manager = TaskManager(include_path=folders, include_defaults=not set(tasks) <= own)
    unknown = [name for name in tasks if not manager.match_tasks([name])]
    if unknown:
        raise HarnessError(
            f"unknown lm-eval task(s) {', '.join(unknown)}; the harness's own are "
            f"{', '.join(sorted(_own_tasks()))}"
        )
    from harness.pruning.pruner import ForwardStats

    lm = PrunedLM(
        pretrained=model,
        tokenizer=tokenizer,
        batch_size=batch_size,
        device=str(next(model.parameters()).device),
    )
    results: dict[str, dict[str, Any]] = {}
    for task in tasks:  # one at a time, so that each gets its own realised speedup
        lm.stats = ForwardStats()
        output = lm_eval.simple_evaluate(
            model=lm,
            tasks=[task],
            task_manager=manager,
            limit=limit,
            num_fewshot=num_fewshot,
            bootstrap_iters=bootstrap_iters,
            log_samples=False,
            apply_chat_template=apply_chat_template,
        )
        for name, row in flatten_results(output).items():
            results[name] = {
                **row,
                "eval_predicted_speedup": lm.predicted_speedup,
                "eval_clamped": lm.stats.clamped,
            }
    return results


def flatten_results(output: dict) -> dict[str, dict[str, Any]]:
    """``simple_evaluate``'s ``results`` section as ``{task: {metric: v, metric_stderr: se, "n": docs}}``."""
    flat: dict[str, dict[str, Any]] = {}
    for task, values in output["results"].items():
        row: dict[str, Any] = {}
        for key, value in values.items():
            if "," not in key:
                continue  # alias, name
            metric, filter_name = key.split(",", 1)
            name = metric if filter_name == "none" else f"{metric},{filter_name}"
            row[name] = None if value == "N/A" else value
        samples = output.get("n-samples", {}).get(task)
        if samples:
            row["n"] = samples.get("effective")
        flat[task] = row
    return flat


AccLM = PrunedLM
"""The class's first name, kept for code that imports it."""
