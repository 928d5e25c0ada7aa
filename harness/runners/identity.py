"""A cell's identity: everything that determines its numbers, so a rerun never returns a stale or foreign row.

A results row is found again by its ``cell_key`` (model, weights, task name, protocol, method, speedup,
speedup model, seed: the coordinates a board shows).  Those coordinates do not say what the numbers were
made from, so every row also carries ``identity``:

* ``checkpoint``: the weights by content (a local folder's files hashed; an asset's pinned sha256; a hub
  snapshot's revision; random weights: the architecture's config);
* ``task``: the task by content (a task file and its data files hashed; an embedded task's asset pin; the
  lm-eval YAMLs and loaders that render its prompts; ``--data-dir`` files hashed);
* ``settings``: every evaluation, timing and (for protocols that train) training setting, the dtype and
  device, and the harness version.

**A run folder holds one experiment.**  A rerun whose cells have the identity of the rows already there
resumes (finished cells are skipped).  A rerun asking for anything else is refused before any work, with
one line naming what changed (``--epochs 2 -> 1``; "the task file or its data changed"); a new ``--out``
keeps both.  Refusing, rather than keeping two identities of one cell side by side in one folder, was
chosen because a folder's board must compare like with like: a new speedup fine-tuned with another budget
is a different model even though its cell is new, and a board that kept both would have to explain which
row came from which experiment.  Rows made before identities existed cannot be vouched for, so a folder
holding them takes no new cells either.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from harness.assets import ASSETS
from harness.assets.fingerprint import files_fingerprint, folder_fingerprint, value_fingerprint
from harness.contracts.task import Task
from harness.models.catalog import checkpoint_fingerprint
from harness.registry import HarnessError
from harness.version import __version__

TIMING_SETTINGS = ("repeats", "warmup", "device")
EVAL_SETTINGS = ("batch_size", "max_length", "max_eval")
PROMPT_SETTINGS = ("num_fewshot", "chat_template")
TRAIN_SETTINGS = ("max_train", "search")
"""Settings that matter only where a protocol fine-tunes (``search`` tunes a method on held-out rows)."""
NAMES = {
    "max_eval": "--limit",
    "max_train": "--max-train",
    "batch_size": "--batch-size",
    "max_length": "--max-length",
    "repeats": "--repeats",
    "warmup": "warmup",
    "device": "--device",
    "search": "--search",
    "num_fewshot": "--num-fewshot",
    "chat_template": "--chat-template",
    "harness": "harness version",
    "threads": "--threads",
    "dtype": "--dtype",
    "train.epochs": "--epochs",
    "train.steps": "--train-steps",
    "train.lora": "--lora",
    "train.train_on": "--train-on",
}


def task_fingerprint(task: Task, protocol: str, data_dir: str | None = None) -> str:
    """The task's content as ``protocol`` reads it: its definition, and the bytes of its sources."""
    definition = {
        field.name: getattr(task, field.name)
        for field in dataclasses.fields(task)
        if field.name not in ("load", "description", "sources")
    }
    parts = {"definition": definition, "files": files_fingerprint(task.sources) if task.sources else None}
    if task.asset is not None:
        parts["asset"] = ASSETS.get(task.asset).sha256
    if protocol == "finetune" and data_dir is not None:
        parts["data_dir"] = folder_fingerprint(data_dir)
    if protocol != "finetune":
        parts["prompts"] = files_fingerprint(_prompt_files(task, protocol))
    return value_fingerprint(parts)


def _prompt_files(task: Task, protocol: str) -> list[Path]:
    """The lm-eval YAMLs a protocol runs for ``task``, and the Python files beside them (their loaders)."""
    from harness.runners.lm_eval_bridge import TASKS_DIR
    from harness.runners.prompt_suites import suite_files

    if "prompts/" in protocol:  # prompts/<mode>, finetune-lm/prompts/<mode>
        yamls = [suite.path for suite in suite_files(task.name, protocol.split("prompts/", 1)[1])]
    else:
        folder = Path(task.lm_eval.include_path or TASKS_DIR)
        yamls = [path for path in folder.glob("*.yaml") if path.stem == task.lm_eval.name]
    folders = {path.parent for path in yamls}
    loaders = (path for folder in folders for path in folder.glob("*.py") if path.name != "__init__.py")
    return [*yamls, *loaders]


def settings_identity(config, protocol) -> dict:
    """The run settings a protocol's numbers depend on (training settings only where it trains)."""
    names = TIMING_SETTINGS + EVAL_SETTINGS + (PROMPT_SETTINGS if "prompts/" in protocol.name else ())
    settings = {name: getattr(config, name) for name in names}
    settings.update(threads=torch.get_num_threads(), dtype=config.dtype, harness=__version__)
    if protocol.trains and config.weights == "pretrained":
        settings.update({name: getattr(config, name) for name in TRAIN_SETTINGS})
        settings["train"] = protocol.train_identity(config)  # without seed and method: cell coordinates
    return settings


def identities(config, resolved: dict, protocols) -> dict:
    """``{(model, task, protocol): identity}`` for every group of cells the sweep asks for; two task files
    of one name are refused here (their cells would share keys)."""
    _refuse_one_name_twice(resolved["tasks"])  # before any checkpoint is resolved and hashed
    checkpoints = {name: checkpoint_fingerprint(name, config.weights) for name in resolved["models"]}
    found = {}
    for model, spec in resolved["models"].items():
        for task in resolved["tasks"].values():
            for protocol in map(protocols.get, config.protocols_for(spec)):
                found[model, task.name, protocol.name] = _as_stored(
                    {
                        "checkpoint": checkpoints[model],
                        "task": task_fingerprint(task, protocol.name, config.data_dir),
                        "settings": settings_identity(config, protocol),
                    }
                )
    return found


def _as_stored(identity: dict) -> dict:
    """The identity as a results row stores it (tuples become lists), so that it compares equal to a row's."""
    return json.loads(json.dumps(identity, default=str))


def _refuse_one_name_twice(tasks: dict) -> None:
    seen: dict[str, str] = {}
    for given, task in tasks.items():
        if task.name in seen:
            raise HarnessError(
                f"--tasks {seen[task.name]} and {given} are both named {task.name!r}: a task's "
                f"cells are keyed by its name, so give each task file its own name:"
            )
        seen[task.name] = given


def check_folder(rows: list[dict], wanted: dict, where) -> None:
    """Refuse, naming what changed, when ``rows`` (the run folder's) were made under another identity
    than the ``wanted`` groups (``identities``): a rerun may only add cells of the same experiment."""
    if not rows:
        return
    if legacy := [row for row in rows if "identity" not in row]:
        raise HarnessError(
            f"{where} holds {len(legacy)} rows made by harness {legacy[0].get('harness_version', '?')} "
            f"before rows recorded what made them, so new cells cannot be shown beside them; "
            f"give --out a new folder"
        )
    for (model, task, protocol), identity in wanted.items():
        for row in rows:
            if change := _change(row, model, task, protocol, identity):
                raise HarnessError(
                    f"{where} holds cells made {change}; rerun with the same settings to resume "
                    f"it, or give --out a new folder to keep both"
                )


def _change(row: dict, model: str, task: str, protocol: str, identity: dict) -> str | None:
    """What differs between a stored row and a wanted group, in words (None: nothing that concerns it)."""
    have = row["identity"]
    if row["model"] == model and have["checkpoint"] != identity["checkpoint"]:
        return f"from other weights of {model} ({have['checkpoint']} -> {identity['checkpoint']})"
    if row["task"] == task and row.get("protocol") == protocol and have["task"] != identity["task"]:
        return f"from other content of task {task!r} (the task file, its data or its prompts changed)"
    if row.get("protocol") == protocol and have["settings"] != identity["settings"]:
        diffs = _differences(have["settings"], identity["settings"])
        return "with other settings: " + ", ".join(diffs)
    return None


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            diffs += _differences(before, after, f"{prefix}{key}.")
        elif before != after:
            name = NAMES.get(prefix + key, prefix + key)
            diffs.append(f"{name} {before} -> {after}")
    return diffs
