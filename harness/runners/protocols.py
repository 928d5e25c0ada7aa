"""The built-in protocols (the contract: ``harness.contracts.protocol``): how a sweep measures quality.

* ``finetune``: fine-tune once per (model, task, method, seed) with the method's recipe (offline
  tuning by default; cached), let the method tune its inference state on held-out rows
  (``Method.fit``: LTP's threshold scales, LAT's length search), then evaluate every speedup on the
  task's evaluation split(s).  Encoders' default,
  and decoders' classification heads.
* ``zero-shot``: run the task's lm-eval configuration through the pruned decoder and record lm-eval's
  metrics and standard errors.  Decoders' default.
* ``finetune-lm``: offline tuning of decoders and encoder-decoders (``harness.training.lm``) on
  ``--train-on``, then evaluated as ``zero-shot``.

A seq2seq or instruction-prompt protocol registers beside them in ``PROTOCOLS``.
"""

from __future__ import annotations

from dataclasses import asdict, replace

import torch

from harness.api import prune
from harness.assets.cache import how_checked
from harness.contracts.method import Tuning
from harness.contracts.protocol import NO_QUALITY, EvalProtocol, Prepared
from harness.contracts.task import main_score
from harness.data.tasks import compute_metrics, load_task
from harness.models.catalog import load_causal_lm, load_classifier
from harness.pruning.methods import METHODS
from harness.pruning.pruner import ForwardStats
from harness.registry import HarnessError, Registry
from harness.runners import prompt_suites
from harness.runners.classify import predict
from harness.runners.lm_training import lm_train_identity, tuned_model
from harness.training.cache import load_or_fine_tune
from harness.training.loop import encode


def _on(device: str, loaded):
    loaded.model.to(device)
    return loaded


TUNING_ROWS = 256
"""Held-out rows a method tunes its inference state on (LTP's threshold scales, LAT's length search)."""


def tuning_rows(task_data, seed: int):
    """Rows no reported score is computed on: the validation split where the task reports on test
    (rt-polarity), else a seeded sample of the training rows (GLUE and BoolQ report on validation)."""
    spec = task_data.spec
    if "validation" in task_data.splits and "validation" not in spec.eval_splits:
        frame = task_data.splits["validation"]
    else:
        frame = task_data.splits["train"]
    return (
        frame.sample(n=min(TUNING_ROWS, len(frame)), random_state=seed) if len(frame) > TUNING_ROWS else frame
    )


def tuning_for(loaded, task_data, config, seed: int) -> Tuning:
    """What ``Method.fit`` tunes on: quality and realised FLOPs of the model on the held-out rows."""
    frame, spec = tuning_rows(task_data, seed), task_data.spec

    def evaluate(model) -> tuple[float, ForwardStats]:
        predictions, stats = predict(loaded, frame, spec, config.batch_size, config.max_length)
        metrics = compute_metrics(spec, predictions, frame["label"].to_numpy())
        return main_score(metrics, spec.main_metric, spec.name), stats

    lengths = [
        len(row["input_ids"]) for row in encode(loaded.tokenizer, frame, spec.text_fields, config.max_length)
    ]
    return Tuning(evaluate, lengths, search=config.search, seed=seed, progress=config.progress)


class FineTune(EvalProtocol):
    name, kinds, trains = "finetune", ("encoder", "decoder"), True
    default_method = "acc-decay-distill"  # the best ACC recipe on minilm × rt-polarity, 3 seeds (README)
    description = "fine-tune once per method with its recipe (offline tuning), evaluate every speedup"

    def check(self, family, task) -> None:
        if family.kind not in self.kinds:  # T5's classifier reads the decoder's </s>: not this recipe's head
            raise HarnessError(
                f"{family.name!r} models ({family.kind}s) cannot be fine-tuned as classifiers; "
                f"evaluate them with --protocol zero-shot (lm-eval, seq2seq)"
            )
        task.check_protocol(self.name)

    def train_identity(self, config) -> dict:
        return {k: v for k, v in asdict(config.train).items() if k not in ("seed", "method")}

    def prepare(self, config, model_name, task, method) -> Prepared:
        if config.weights == "random":
            return Prepared(_on(config.device, load_classifier(model_name, "random", task.num_labels)))
        train = replace(config.train, method=method.fine_tune_as or method.name)
        # data first: a bad --data-dir fails before any model loads
        task_data = load_task(task, data_dir=config.data_dir, seed=train.seed, limit=config.limits(task))
        # The new head's initial weights come from the training seed, not from whatever drew random numbers
        # before: the fine-tuned model is then a function of what its cache key names.
        torch.manual_seed(train.seed)
        loaded = _on(config.device, load_classifier(model_name, "pretrained", task.num_labels))
        loaded, folder, reused = load_or_fine_tune(loaded, task_data, train, config.progress)
        prune(loaded.model, method=method.name)  # a method reusing another's fine-tune (fine_tune_as)
        loaded.model.fit_method(config.speedups, tuning_for(loaded, task_data, config, train.seed))
        texts = task_data.splits[task.eval_splits[0]][task.text_fields[0]].astype(str)
        context = {
            "data": task_data.provenance,
            "train": {
                "cache": str(folder),
                "reused": reused,
                "verified": how_checked(folder),
                "recipe": METHODS.get(train.method).recipe,
                "examples": len(task_data.splits["train"]),
                **asdict(train),
            },
        }
        return Prepared(loaded, lambda loaded: self.quality(loaded, task_data, config), texts, context)

    @staticmethod
    def quality(loaded, task_data, config) -> dict:
        metrics, stats, examples = {}, ForwardStats(), 0
        for split in task_data.spec.eval_splits:
            frame = task_data.splits[split]
            examples += len(frame)
            predictions, split_stats = predict(
                loaded, frame, task_data.spec, config.batch_size, config.max_length
            )
            prefix = "mm_" if split == "validation_mismatched" else ""
            for name, value in compute_metrics(
                task_data.spec, predictions, frame["label"].to_numpy()
            ).items():
                metrics[prefix + name] = value
            stats = stats + split_stats
        main = task_data.spec.main_metric
        return {
            "metrics": metrics,
            "main_metric": main,
            "score": main_score(metrics, main, task_data.spec.name),
            "eval_predicted_speedup": stats.realised_speedup,
            "eval_clamped": stats.clamped,
            "eval_examples": examples,
        }


def lm_eval_quality(config, task):
    """loaded -> the row's quality columns: the task's lm-eval configuration run through the model."""
    lm_task = task.lm_eval

    def quality(loaded):
        from harness.runners.lm_eval_bridge import evaluate

        metrics = evaluate(
            loaded.model,
            loaded.tokenizer,
            [lm_task.name],
            batch_size=config.batch_size,
            limit=config.max_eval,
            include_path=lm_task.include_path,
            num_fewshot=lm_task.num_fewshot,
        )[lm_task.name]
        realised = metrics.pop("eval_predicted_speedup", None)
        documents, clamped = metrics.pop("n", None), metrics.pop("eval_clamped", None)
        return {
            "metrics": metrics,
            "main_metric": lm_task.main_metric,
            "score": main_score(metrics, lm_task.main_metric, task.name),
            "eval_predicted_speedup": realised,
            "eval_documents": documents,
            "eval_clamped": clamped,
        }

    return quality


def _generative(protocol, family, task) -> None:
    if family.kind not in protocol.kinds:
        raise HarnessError(
            f"--protocol {protocol.name} needs a decoder or an encoder-decoder; {family.name!r} "
            f"models are {family.kind}s (use --protocol finetune)"
        )
    task.check_protocol(protocol.name)


class ZeroShot(EvalProtocol):
    name, kinds = "zero-shot", ("decoder", "encoder-decoder")
    description = "decoders and encoder-decoders: the task's lm-eval configuration through the pruned model"

    def check(self, family, task) -> None:
        _generative(self, family, task)

    def prepare(self, config, model_name, task, method) -> Prepared:
        loaded = _on(config.device, load_causal_lm(model_name, config.weights))
        if config.weights == "random":
            return Prepared(loaded)
        context = {"data": {"lm_eval_task": task.lm_eval.name, "limit": config.max_eval}}
        return Prepared(loaded, lm_eval_quality(config, task), None, context)


class FineTuneLM(EvalProtocol):
    """Offline tuning of generative models: tune once under elimination on ``--train-on`` (never on an
    evaluated document: ``lm_training.check_no_overlap``), cached, then evaluate every speedup as
    ``zero-shot`` does.  Every task of a sweep shares the one tuned model (the cache key names the
    training data, not the evaluated task)."""

    name, kinds, trains = "finetune-lm", ("decoder", "encoder-decoder"), True
    description = (
        "decoders and encoder-decoders: tune once under elimination on --train-on (offline tuning), "
        "evaluate every speedup through lm-eval"
    )

    def check(self, family, task) -> None:
        _generative(self, family, task)

    def train_identity(self, config) -> dict:
        return lm_train_identity(config)

    def prepare(self, config, model_name, task, method) -> Prepared:
        if config.weights == "random":
            return Prepared(_on(config.device, load_causal_lm(model_name, "random")))
        loaded, train = tuned_model(config, model_name, method)
        context = {"data": {"lm_eval_task": task.lm_eval.name, "limit": config.max_eval}, "train": train}
        return Prepared(loaded, lm_eval_quality(config, task), None, context)


PROTOCOLS: Registry[EvalProtocol] = Registry("protocol")
for _protocol in (FineTune(), ZeroShot(), FineTuneLM()):
    PROTOCOLS.register(_protocol.name, _protocol)
prompt_suites.register(PROTOCOLS)  # prompts/<mode>, and finetune-lm/prompts/<mode> on the tuned model

__all__ = ["NO_QUALITY", "PROTOCOLS", "FineTune", "FineTuneLM", "ZeroShot"]
