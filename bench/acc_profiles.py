"""The ACC recipe study's profile table (README, "The ACC recipe study"): ``acc``'s offline-tuned minilm on
rt-polarity, one fine-tune per training seed, evaluated under other elimination profiles at the same FLOP
targets, with no retraining.  Why: it separates what the profile does from what training does (``acc-decay``
then trains under the winning profile).

The fine-tunes come from the harness cache, so run the sweep first (``harness run --seeds 3`` fine-tunes
``acc`` for seeds 0..2; the cache key is the one it uses).  Each seed is evaluated on its own split (the
training seed draws rt-polarity's 80/10/10 split).  Prints one JSON line per (seed, split, profile, r_min,
speedup) and, at the end, the mean ± sd over the seeds of each test-split cell.

    python bench/acc_profiles.py                                    # seeds 0,1,2; validation and test
    python bench/acc_profiles.py --seeds 0 --splits validation --profiles tilt:0,tilt:0.1,decay:0
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict

import torch

import harness
from harness.contracts.profile import PROFILES, Profile
from harness.contracts.task import main_score
from harness.data.tasks import compute_metrics, get_task, load_task
from harness.models.catalog import load_classifier
from harness.runners.classify import predict
from harness.training.cache import load_or_fine_tune
from harness.training.loop import TrainSettings

PROFILES.register(
    "linear-first",
    Profile(  # a study variant only: tilt's line, starting at the first layer
        "linear-first",
        lambda tau, layer, layers, r_min: max(r_min, 1.0 - tau * layer / layers),
        lambda layers, r_min: layers * (1.0 - r_min),
    ),
)
DEFAULT_PROFILES = "tilt:0,geometric:0,decay:0,linear-first:0.1"


def fine_tuned_acc(task, seed: int):
    """``acc``'s fine-tune for ``seed`` with the sweep's default settings (from the cache, else trained now)."""
    data = load_task(task, seed=seed)
    torch.manual_seed(seed)  # the head's initial weights, as the sweep's fine-tune protocol draws them
    loaded = load_classifier("minilm", "pretrained", task.num_labels)
    loaded, _, reused = load_or_fine_tune(loaded, data, TrainSettings(method="acc", seed=seed))
    return loaded, data, reused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--splits", default="validation,test")
    parser.add_argument("--profiles", default=DEFAULT_PROFILES, help="profile:r_min, comma-separated")
    parser.add_argument("--speedups", default="2,3,4")
    args = parser.parse_args()
    task = get_task("rt-polarity")
    variants = [
        (name, float(r_min)) for name, r_min in (item.split(":") for item in args.profiles.split(","))
    ]
    speedups = [1.0] + [float(s) for s in args.speedups.split(",")]
    test = defaultdict(list)
    for seed in map(int, args.seeds.split(",")):
        loaded, data, reused = fine_tuned_acc(task, seed)
        for split in args.splits.split(","):
            frame = data.splits[split]
            for profile, r_min in variants:
                for speedup in speedups if (profile, r_min) == variants[0] else speedups[1:]:
                    harness.prune(loaded.model, method="acc", speedup=speedup, profile=profile, r_min=r_min)
                    predictions, stats = predict(loaded, frame, task, 32, 128)
                    metrics = compute_metrics(task, predictions, frame["label"].to_numpy())
                    accuracy = 100 * main_score(metrics, task.main_metric, task.name)
                    print(
                        json.dumps(
                            {
                                "seed": seed,
                                "split": split,
                                "profile": profile,
                                "r_min": r_min,
                                "speedup": speedup,
                                "accuracy": round(accuracy, 2),
                                "cached": reused,
                                "realised": round(stats.realised_speedup, 3),
                                "clamped": stats.clamped,
                            }
                        ),
                        flush=True,
                    )
                    if split == "test":
                        test[(profile, r_min, speedup)].append((accuracy, stats.realised_speedup))
    for (profile, r_min, speedup), cells in test.items():
        accuracies = [a for a, _ in cells]
        spread = f" ± {statistics.stdev(accuracies):.2f}" if len(cells) > 1 else ""
        print(
            f"test {profile} r_min {r_min:g} at {speedup:g}x: {statistics.mean(accuracies):.2f}{spread} "
            f"({len(cells)} seeds, realised {statistics.mean(r for _, r in cells):.2f}x)"
        )


if __name__ == "__main__":
    main()
