"""The ``harness`` command line: run, leaderboard, compare, report, plot, positions, list, cache, calibrate.

User errors (unknown names, bad numbers, unreachable speedups, missing data, unwritable folders) print
one line, ``harness: error: ...``, and exit with code 2; no traceback.  ``harness run`` with no
arguments runs the embedded default: minilm on rt-polarity at speedups 1, 2, 3, 4 (``make demo``).
A run's reports go under its own folder (or ``--report-dir``), never into the current directory's
``leaderboards/`` and ``plots/`` unless asked; ``harness leaderboard`` and ``harness plot`` write where told,
and rebuild the prompt-mode board and figures too when a run folder holds rows made with ``--prompts``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.registry import HarnessError

LEADERBOARDS, PLOTS = Path("leaderboards"), Path("plots")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, as for every other user error
        self.exit(2, f"harness: error: {message} (see '{self.prog} --help')\n")


def _names(text: str, option: str, example: str = "see 'harness list'") -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise HarnessError(f"{option} is empty; give a comma-separated list ({example})")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="harness",
        description=__doc__.splitlines()[0],
        epilog="harness lm-eval <lm_eval arguments>: lm-eval's own command line with --model harness",
    )
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)

    run = commands.add_parser(
        "run", help="fine-tune once, sweep speedups, measure, write leaderboard and plots"
    )
    run.add_argument(
        "--models", default="minilm", help="comma-separated aliases or local folders (default: minilm)"
    )
    run.add_argument(
        "--tasks",
        default="rt-polarity",
        help="comma-separated task names or task files (*.yaml, your own data; default: rt-polarity)",
    )
    run.add_argument(
        "--speedups", default="1,2,3,4", help="comma-separated target speedups >= 1 (default: 1,2,3,4)"
    )
    run.add_argument(
        "--methods",
        help="comma-separated pruning methods (default: acc-decay-distill under "
        "--protocol finetune, the best ACC recipe; acc, the reference, otherwise)",
    )
    run.add_argument(
        "--weights", default="pretrained", help="pretrained | random (random: latency and FLOPs only)"
    )
    run.add_argument(
        "--protocol",
        default=None,
        help="finetune | zero-shot | finetune-lm (default: finetune for encoders, zero-shot through lm-eval "
        "for decoders; finetune-lm tunes a decoder or encoder-decoder under elimination first)",
    )
    run.add_argument(
        "--prompts",
        default=None,
        help="comma-separated prompt modes: zero-shot, few-shot, instruction (the prompt suites in tasks/)",
    )
    run.add_argument(
        "--num-fewshot", type=int, default=None, help="demonstrations in few-shot mode (default: 5)"
    )
    run.add_argument(
        "--chat-template", action="store_true", help="instruction mode through the chat template"
    )
    run.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    run.add_argument(
        "--dtype",
        default=None,
        help="float32 | bfloat16 | float16 (CUDA only): weights and compute of evaluation and timing; "
        "fine-tunes train in float32 (default: float32 on cpu, bfloat16 on cuda)",
    )
    run.add_argument(
        "--speedup-model",
        default="flops",
        help="flops | latency: what a speedup means, FLOPs(dense)/FLOPs(pruned) (default) or predicted "
        "wall-clock latency on this machine (needs 'harness calibrate')",
    )
    run.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads, 1 to this process's logical cores (default: torch's choice)",
    )
    run.add_argument("--batch-size", type=int, default=32)
    run.add_argument("--max-length", type=int, default=128)
    run.add_argument("--epochs", type=float, default=2.0, help="fine-tuning epochs (default: 2)")
    run.add_argument(
        "--max-train",
        type=int,
        default=None,
        help="use at most this many training rows (finetune-lm: per --train-on source, default 1000)",
    )
    run.add_argument(
        "--train-on",
        default=None,
        help="finetune-lm's training data: comma-separated lm-eval tasks with a training split or "
        ".jsonl/.csv/.parquet files of text or prompt/response rows (default: "
        "rt-polarity-zs,boolq-zs,rt-polarity-recall,heldout-ppl, their training splits)",
    )
    run.add_argument(
        "--train-steps",
        type=int,
        default=100,
        help="finetune-lm's optimizer steps (default: 100, about 40 minutes for smollm2 on 2 CPU cores)",
    )
    run.add_argument(
        "--train-length",
        type=int,
        default=256,
        help="finetune-lm's tokens per training example, context and continuation (default: 256)",
    )
    run.add_argument(
        "--lora",
        type=int,
        default=0,
        help="finetune-lm: train LoRA adapters of this rank (default 0: all weights)",
    )
    run.add_argument(
        "--limit",
        "--max-eval",
        dest="max_eval",
        type=int,
        default=None,
        help="at most N evaluation documents per task (lm-eval's --limit; --max-eval is the same "
        "option: lm-eval protocols take the first N, fine-tuning a seeded sample of N)",
    )
    run.add_argument(
        "--data-dir", default=None, help="folder of train/validation .csv|.jsonl|.parquet with GLUE columns"
    )
    run.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed forwards per cell and variant (default: 10; 3 with --prompts, whose latency "
        "batches are whole batches of long prompts)",
    )
    run.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="fine-tunes per model, task and method, with training seeds 0..N-1 (default: 1)",
    )
    run.add_argument(
        "--search",
        type=int,
        default=8,
        help="generations of LAT's length search on held-out rows (default: 8; 0: the shared profile)",
    )
    run.add_argument("--out", default=None, help="run folder (default: runs/<models>_<tasks>_<weights>)")
    run.add_argument(
        "--report-dir",
        default=None,
        help="folder for this run's leaderboards/<name>.md|csv and plots/<name>/ (default: the run "
        "folder; 'make demo' passes . to refresh the committed examples)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument(
        "--executor",
        default="serial",
        choices=("serial", "ray"),
        help="serial: every cell in this process (default); ray: fine-tunes, evaluations and timings as "
        "Ray tasks (docs/ray.md)",
    )
    run.add_argument(
        "--ray-address",
        default=None,
        help="with --executor ray: the Ray cluster to run on, HOST:PORT (default: start a local Ray here)",
    )

    board = commands.add_parser("leaderboard", help="build Markdown and CSV tables from run folders")
    board.add_argument("runs", nargs="+", help="run folders")
    board.add_argument(
        "--name", default=None, help="file name stem, no folders (default: the first run folder's name)"
    )
    board.add_argument("--out", default=str(LEADERBOARDS))

    compare = commands.add_parser(
        "compare", help="methods side by side at equal cost: table and plot per task"
    )
    compare.add_argument("runs", nargs="+", help="run folders")
    compare.add_argument(
        "--name", default=None, help="file name stem, no folders (default: the first run folder's name)"
    )
    compare.add_argument(
        "--out",
        default=".",
        help="folder for leaderboards/<name>_compare.md|csv and plots/<name>/ (default: .; not empty)",
    )

    report = commands.add_parser(
        "report", help="a static HTML report of run folders: sortable tables, figures, provenance"
    )
    report.add_argument("runs", nargs="+", help="run folders")
    report.add_argument(
        "--out",
        required=True,
        help="folder for index.html and plotly.min.js (opens from disk); new, empty or a former report",
    )

    plot = commands.add_parser("plot", help="paper-style figures from run folders")
    plot.add_argument("runs", nargs="+", help="run folders")
    plot.add_argument("--out", default=None, help="folder (default: plots/<first run folder's name>)")

    where = commands.add_parser(
        "positions", help="decoders: where the kept tokens sit, per layer and method (histograms)"
    )
    where.add_argument("--model", default="smollm2", help="a decoder (default: smollm2)")
    where.add_argument(
        "--methods",
        default=None,
        help="comma-separated (default: the prefill study's seven, harness.pruning.methods.PREFILL_STUDY)",
    )
    where.add_argument("--speedup", default="2", help="requested speedup (default: 2)")
    where.add_argument(
        "--task",
        default="rt-polarity-zs",
        help="an lm-eval task of tasks/ (a file's name without .yaml) whose prompts are traced "
        "(default: rt-polarity-zs)",
    )
    where.add_argument(
        "--limit", type=int, default=20, help="prompts traced (the task's first N documents; default 20)"
    )
    where.add_argument("--weights", default="pretrained", choices=("pretrained", "random"))
    where.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads, 1 to this process's logical cores (default: torch's choice)",
    )
    where.add_argument("--out", default=str(PLOTS), help="folder for the figure (default: plots)")

    cal = commands.add_parser(
        "calibrate", help="time an architecture's layers on this machine for --speedup-model latency"
    )
    cal.add_argument(
        "--models", default="bert", help="comma-separated aliases or local folders (default: bert)"
    )
    cal.add_argument(
        "--batch-sizes", default="1,16", help="comma-separated batch sizes to time (default: 1,16)"
    )
    cal.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads, 1 to this process's logical cores (default: torch's choice)",
    )
    cal.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    cal.add_argument(
        "--dtype",
        default=None,
        help="float32 | bfloat16 | float16 (CUDA only), as harness run --dtype (default: float32 on cpu, "
        "bfloat16 on cuda)",
    )
    cal.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="longest input to calibrate (default: 512 for encoders, 1024 for decoders)",
    )
    cal.add_argument(
        "--budget",
        type=float,
        default=0.25,
        help="seconds of timing per grid point, >= 0 (default: 0.25; 0: one timed call per point)",
    )
    cal.add_argument(
        "--validate-seconds",
        type=float,
        default=60.0,
        help="seconds of held-out validation, >= 0 (default: 60; 0: none)",
    )
    cal.add_argument("--force", action="store_true", help="time again even if a calibration is stored")
    cal.add_argument("--no-progress", action="store_true", help="no progress bars")

    commands.add_parser(
        "list", help="models, families, tasks, methods, protocols and profiles, with their sources"
    )

    cache = commands.add_parser(
        "cache", help="check (hashing every file) or remove entries of $HARNESS_CACHE"
    )
    cache.add_argument("action", choices=("verify", "clear"))
    cache.add_argument(
        "name",
        nargs="?",
        default=None,
        help="an entry (assets/minilm-0.1.0), a kind (assets, converted, finetuned) or an asset "
        "name (minilm); default: every entry",
    )
    return parser


def _run(args) -> None:
    from harness.measure.hardware import set_threads
    from harness.report.location import report_place
    from harness.runners.sweep import SweepConfig, run_sweep
    from harness.training.lm import LMTrainSettings
    from harness.training.loop import TrainSettings

    _folder(args.out, "--out")  # before any work: an empty one means the current folder
    executor = _executor(args)
    _folder(args.report_dir, "--report-dir")
    config = SweepConfig(
        models=_names(args.models, "--models"),
        tasks=_names(args.tasks, "--tasks"),
        speedups=_names(args.speedups, "--speedups", "numbers >= 1 such as 1,2,4"),
        methods=_names(args.methods, "--methods") if args.methods is not None else None,
        weights=args.weights,
        protocol=args.protocol,
        speedup_model=args.speedup_model,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        max_length=args.max_length,
        out=args.out,
        data_dir=args.data_dir,
        max_train=args.max_train,
        max_eval=args.max_eval,
        repeats=args.repeats,
        seeds=args.seeds,
        search=args.search,
        train=TrainSettings(epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length),
        lm_train=LMTrainSettings(steps=args.train_steps, max_length=args.train_length, lora=args.lora),
        **({"train_on": _names(args.train_on, "--train-on")} if args.train_on is not None else {}),
        progress=not args.no_progress,
        prompts=_names(args.prompts, "--prompts", "zero-shot,few-shot,instruction")
        if args.prompts is not None
        else None,
        num_fewshot=args.num_fewshot,
        chat_template=args.chat_template,
    )
    place = report_place(
        config.run_dir(), args.report_dir
    )  # a name taken by another run fails before the sweep
    set_threads(args.threads)
    run_dir = run_sweep(config, executor)
    place.check_free()
    _figures(_board([run_dir], place.leaderboards, place.name), place.plots)
    if len(config.methods or ()) > 1 or config.seeds > 1:
        _compare([run_dir], place.leaderboards, place.plots, place.name)
    _prompt_board([run_dir], place.leaderboards, place.name)
    _prompt_figures([run_dir], place.plots)
    place.record_owner()


def _executor(args):
    """``--executor``'s executor (None: the serial sweep); ``--ray-address`` is refused without ray."""
    if args.executor != "ray":
        if args.ray_address is not None:
            raise HarnessError("--ray-address needs --executor ray")
        return None
    from harness.runners.ray_executor import RayExecutor

    if args.ray_address is not None and not args.ray_address.strip():
        raise HarnessError("--ray-address is empty; give HOST:PORT, or leave it out to start a local Ray")
    return RayExecutor(args.ray_address)


def _calibrate(args) -> None:
    from harness.measure.calibrate import calibrate, validation_line

    try:
        sizes = [int(part) for part in _names(args.batch_sizes, "--batch-sizes", "such as 1,16")]
    except ValueError:
        raise HarnessError(
            f"--batch-sizes must be comma-separated positive integers, got {args.batch_sizes!r}"
        ) from None
    for name in _names(args.models, "--models"):
        latency, reused = calibrate(
            name,
            sizes,
            device=args.device,
            dtype=args.dtype,
            threads=args.threads,
            max_length=args.max_length,
            budget_s=args.budget,
            validate_s=args.validate_seconds,
            force=args.force,
            progress=not args.no_progress,
        )
        from harness.measure.calibration_store import calibration_path
        from harness.pruning.latency_model import describe_key

        state = "reused" if reused else f"made in {latency.info.get('seconds', 0):.0f} s"
        print(
            f"{name}: calibration of {describe_key(latency.key)}, batch sizes "
            f"{', '.join(map(str, latency.batch_sizes))}, up to {latency.max_length} tokens ({state}): "
            f"{calibration_path(latency.key)}"
        )
        print(f"{name}: {validation_line(latency.validation)}")


def _positions(args) -> None:
    """``harness positions``: trace a task's prompts through each method and draw where kept tokens sit."""
    from harness.contracts.flops import check_speedup
    from harness.measure.hardware import set_threads
    from harness.models.catalog import load_causal_lm, model_spec
    from harness.pruning.methods import METHODS, PREFILL_STUDY
    from harness.report.positions import plot_positions, positions_by_method, summary
    from harness.runners.lm_eval_bridge import check_own_task
    from harness.runners.prompt_suites import build_prompts

    methods = _names(args.methods, "--methods") if args.methods is not None else list(PREFILL_STUDY)
    for method in methods:
        METHODS.get(method)
    speedup = check_speedup(args.speedup)
    if args.limit < 1:
        raise HarnessError(f"--limit must be a positive integer, got {args.limit}")
    check_own_task(args.task, "harness positions")
    if not model_spec(args.model).is_decoder:
        raise HarnessError(f"harness positions traces decoders; {args.model!r} is not one")
    set_threads(args.threads)
    loaded = load_causal_lm(args.model, args.weights)
    prompts = [
        loaded.tokenizer(prompt.text)["input_ids"] for prompt in build_prompts(args.task, None, args.limit)
    ]
    by_method = positions_by_method(loaded.model.eval(), methods, speedup, prompts)
    lengths = sorted(len(ids) for ids in prompts)
    title = (
        f"{args.model} ({args.weights}) · {args.task}: {len(prompts)} prompts of {lengths[0]}–{lengths[-1]} "
        f"tokens · {speedup:g}× requested — where the kept tokens sit"
    )
    paths = plot_positions(
        by_method, Path(args.out), title, f"positions_{args.model}_{args.task}_{speedup:g}x"
    )
    for method, numbers in summary(by_method).items():
        print(
            f"{method}: mean relative position {numbers['mean']:.2f}, first tenth {100 * numbers['first tenth']:.0f}%, "
            f"last tenth {100 * numbers['last tenth']:.0f}% of kept tokens (all layers)"
        )
    print("positions: " + " ".join(map(str, paths)))


def _board(runs: list[Path], out: Path, name: str):
    from harness.report.leaderboard import load_rows, to_markdown, write_leaderboard

    frame = load_rows(runs)
    paths = write_leaderboard(frame, out, name)
    print(to_markdown(frame))
    print("leaderboard: " + " ".join(map(str, paths)))
    return frame


def _figures(frame, out: Path) -> None:
    from harness.report.plots import plot_kept_profile, plot_measured_vs_predicted, plot_quality_vs_speedup

    figures = [
        *plot_quality_vs_speedup(frame, out),
        *plot_measured_vs_predicted(frame, out),
        *plot_kept_profile(frame, out),
    ]
    print(f"plots: {len(figures)} files in {out}")


def _compare(runs: list[Path], boards: Path, plots: Path, name: str) -> None:
    """Methods side by side (``harness.report.compare``): one table and one figure per task."""
    from harness.report.compare import compare_frame, compare_markdown, plot_compare, write_compare
    from harness.report.leaderboard import load_rows

    table = compare_frame(load_rows(runs))
    paths = write_compare(table, boards, f"{name}_compare")
    figures = plot_compare(table, plots)
    print(compare_markdown(table))
    print("comparison: " + " ".join(map(str, paths)) + f"; plots: {len(figures)} files in {plots}")


def _prompt_board(runs: list[Path], out: Path, name: str) -> None:
    """The prompt-mode leaderboard ``<name>_prompts.{md,csv}``, when the runs hold rows made with --prompts."""
    from harness.report.prompt_board import has_prompt_rows, load_prompt_rows, write_prompt_board

    if has_prompt_rows(runs):
        paths = write_prompt_board(load_prompt_rows(runs), out, f"{name}_prompts")
        print("prompt-mode leaderboard: " + " ".join(map(str, paths)))


def _prompt_figures(runs: list[Path], out: Path) -> None:
    """Per task, the metric against speedup with one line per prompt mode, and where the kept tokens come
    from, when the runs hold rows made with --prompts."""
    from harness.report.prompt_board import has_prompt_rows, load_prompt_rows, plot_kept_segments, plot_modes

    if has_prompt_rows(runs):
        figures = [*plot_modes(load_prompt_rows(runs), out), *plot_kept_segments(runs, out)]
        print(f"prompt-mode plots: {len(figures)} files in {out}")


def _existing_runs(paths: list[str]) -> list[Path]:
    """The run folders, each once (``runs/x runs/x``, or a link to it, would count its rows twice)."""
    from harness.report.store import unique_runs

    runs = unique_runs(paths)
    for run in runs:
        if not (run / "results.jsonl").is_file():
            raise HarnessError(f"{run} is not a run folder: it has no results.jsonl")
    return runs


def _folder(value: str | None, option: str) -> Path | None:
    """``value`` as a folder (None: not given).  An empty one is refused: ``Path('')`` is the current folder,
    so ``--report-dir ''`` wrote over the committed ``leaderboards/`` of a clone."""
    if value is not None and not value.strip():
        raise HarnessError(f"{option} is empty; give a folder ('.' for the current one)")
    return None if value is None else Path(value)


def _report_args(args) -> tuple[list[Path], Path | None, str]:
    """leaderboard, compare, plot: the run folders (each once), ``--out`` and the report name, all checked
    before anything is read or written."""
    from harness.report.location import default_name, report_name

    out = _folder(args.out, "--out")
    runs = _existing_runs(args.runs)
    name = getattr(args, "name", None)
    return runs, out, report_name(default_name(runs[0]) if name is None else name)


def _list() -> None:
    """Every name the harness knows, with one line about it and where it came from."""
    from harness.contracts.profile import PROFILES
    from harness.data.tasks import TASKS
    from harness.models import FAMILIES
    from harness.models.catalog import MODELS, WEIGHTS
    from harness.pruning.methods import METHODS
    from harness.registry import describe
    from harness.runners.protocols import PROTOCOLS

    def section(title: str, registry, about=describe) -> None:
        print(f"{title}:")
        for name, entry in registry.items():
            print(f"  {name:<12} {about(entry)}  [{registry.source(name)}]")

    section(
        "models",
        MODELS,
        lambda spec: f"{spec.hub_id or 'no hub id'}: {spec.description} (family {spec.family})",
    )
    section("families", FAMILIES, lambda family: f"{family.kind}: {family.description}")
    section("tasks", TASKS, lambda task: f"{task.description} (protocols: {', '.join(task.protocols)})")
    print("  (or a task file: --tasks ./my_task.yaml, see the README)")
    section("methods", METHODS)
    section("protocols", PROTOCOLS)
    print("profiles: " + ", ".join(PROFILES.names()))
    print("weights:  " + ", ".join(WEIGHTS))
    print("devices:  cpu, cuda, cuda:N")


def _cache(action: str, name: str | None) -> int:
    """``harness cache verify|clear [NAME]``; verify hashes every file and exits 1 when it finds a damaged
    entry, which it marks so that its next use rebuilds it (a use checks only sizes and mtimes by default),
    clear removes what NAME selects."""
    from harness.assets.cache import (
        cache_dir,
        entry_name,
        entry_problem,
        mark_damaged,
        remove_entry,
        select_entries,
    )

    selected = select_entries(name)
    if action == "clear":
        for path in selected:
            try:
                remove_entry(path)
            except OSError as exc:
                raise HarnessError(f"cannot remove {path}: {exc.strerror or exc}") from None
        print(f"removed {len(selected)} entries from {cache_dir()}")
        return 0
    damaged = 0
    for path in selected:
        problem = entry_problem(path, always=True)
        damaged += problem is not None
        print(
            f"ok       {entry_name(path)}"
            if problem is None
            else f"damaged  {entry_name(path)}: {problem}; {mark_damaged(path, problem)}"
        )
    print(f"{len(selected)} entries in {cache_dir()}, {damaged} damaged")
    return 1 if damaged else 0


def _quiet_libraries() -> None:
    """transformers' and datasets' load reports and progress bars would bury our own output and errors."""
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "lm-eval":
        from harness.runners.lm_eval_bridge import lm_eval_main

        return lm_eval_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.command == "run":
            _run(args)
        elif args.command == "leaderboard":
            runs, out, name = _report_args(args)
            _board(runs, out, name)
            _prompt_board(runs, out, name)
        elif args.command == "compare":
            runs, out, name = _report_args(args)
            _compare(runs, out / LEADERBOARDS, out / PLOTS / name, name)
        elif args.command == "report":
            from harness.report.html_report import write_report

            runs, out, _ = _report_args(args)
            print(f"report: {write_report(runs, out)}")
        elif args.command == "plot":
            from harness.report.leaderboard import load_rows

            runs, out, name = _report_args(args)
            out = out if out is not None else PLOTS / name
            _figures(load_rows(runs), out)
            _prompt_figures(runs, out)
        elif args.command == "positions":
            _positions(args)
        elif args.command == "list":
            _list()
        elif args.command == "cache":
            return _cache(args.action, args.name)
        elif args.command == "calibrate":
            _calibrate(args)
    except HarnessError as error:
        print(f"harness: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "harness: interrupted; finished cells are saved, rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
