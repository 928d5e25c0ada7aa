"""The ``harness`` command line: run, leaderboard, plot, list.

User errors (unknown names, bad numbers, unreachable speedups, missing data, unwritable folders) print
one line, ``harness: error: ...``, and exit with code 2; no traceback.  ``harness run`` with no
arguments runs the embedded default: minilm on rt-polarity at speedups 1, 2, 3, 4 (``make demo``).
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
    parser = _Parser(prog="harness", description=__doc__.splitlines()[0],
                     epilog="harness lm-eval <lm_eval arguments>: lm-eval's own command line with --model harness")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)

    run = commands.add_parser("run", help="fine-tune once, sweep speedups, measure, write leaderboard and plots")
    run.add_argument("--models", default="minilm", help="comma-separated aliases or local folders (default: minilm)")
    run.add_argument("--tasks", default="rt-polarity",
                     help="comma-separated task names or task files (*.yaml, your own data; default: rt-polarity)")
    run.add_argument("--speedups", default="1,2,3,4", help="comma-separated target speedups >= 1 (default: 1,2,3,4)")
    run.add_argument("--methods", default="acc", help="comma-separated pruning methods (default: acc)")
    run.add_argument("--weights", default="pretrained", help="pretrained | random (random: latency and FLOPs only)")
    run.add_argument("--protocol", default=None,
                     help="finetune | zero-shot (default: finetune for encoders, zero-shot through lm-eval for decoders)")
    run.add_argument("--prompts", default=None,
                     help="comma-separated prompt modes: zero-shot, few-shot, instruction (the prompt suites in tasks/)")
    run.add_argument("--num-fewshot", type=int, default=None, help="demonstrations in few-shot mode (default: 5)")
    run.add_argument("--chat-template", action="store_true", help="instruction mode through the chat template")
    run.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    run.add_argument("--batch-size", type=int, default=32)
    run.add_argument("--max-length", type=int, default=128)
    run.add_argument("--epochs", type=float, default=2.0, help="fine-tuning epochs (default: 2)")
    run.add_argument("--max-train", type=int, default=None, help="use at most this many training rows")
    run.add_argument("--max-eval", type=int, default=None, help="use at most this many evaluation rows")
    run.add_argument("--data-dir", default=None, help="folder of train/validation .csv|.jsonl|.parquet with GLUE columns")
    run.add_argument("--repeats", type=int, default=10, help="timed forwards per cell (default: 10)")
    run.add_argument("--out", default=None, help="run folder (default: runs/<models>_<tasks>_<weights>)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")

    board = commands.add_parser("leaderboard", help="build Markdown and CSV tables from run folders")
    board.add_argument("runs", nargs="+", help="run folders")
    board.add_argument("--name", default=None, help="file name stem (default: the first run folder's name)")
    board.add_argument("--out", default=str(LEADERBOARDS))

    plot = commands.add_parser("plot", help="paper-style figures from run folders")
    plot.add_argument("runs", nargs="+", help="run folders")
    plot.add_argument("--out", default=None, help="folder (default: plots/<first run folder's name>)")

    commands.add_parser("list", help="models, families, tasks, methods, protocols and profiles, with their sources")
    return parser


def _run(args) -> None:
    from harness.runners.glue import TrainSettings
    from harness.runners.sweep import SweepConfig, run_sweep

    config = SweepConfig(
        models=_names(args.models, "--models"), tasks=_names(args.tasks, "--tasks"),
        speedups=_names(args.speedups, "--speedups", "numbers >= 1 such as 1,2,4"),
        methods=_names(args.methods, "--methods"), weights=args.weights, protocol=args.protocol,
        device=args.device, batch_size=args.batch_size, max_length=args.max_length, out=args.out,
        data_dir=args.data_dir, max_train=args.max_train, max_eval=args.max_eval, repeats=args.repeats,
        train=TrainSettings(epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length),
        progress=not args.no_progress,
        prompts=_names(args.prompts, "--prompts", "zero-shot,few-shot,instruction") if args.prompts is not None else None,
        num_fewshot=args.num_fewshot, chat_template=args.chat_template,
    )
    if args.epochs <= 0 or args.repeats < 1:
        raise HarnessError("--epochs must be > 0 and --repeats >= 1")
    run_dir = run_sweep(config)
    frame = _board([run_dir], LEADERBOARDS, run_dir.name)
    _figures(frame, PLOTS / run_dir.name)
    if config.prompts:
        _prompt_report([run_dir], LEADERBOARDS, PLOTS / run_dir.name, run_dir.name)


def _board(runs: list[Path], out: Path, name: str):
    from harness.report.leaderboard import load_rows, to_markdown, write_leaderboard

    frame = load_rows(runs)
    paths = write_leaderboard(frame, out, name)
    print(to_markdown(frame))
    print("leaderboard: " + " ".join(map(str, paths)))
    return frame


def _figures(frame, out: Path) -> None:
    from harness.report.plots import plot_kept_profile, plot_measured_vs_predicted, plot_quality_vs_speedup

    figures = [*plot_quality_vs_speedup(frame, out), *plot_measured_vs_predicted(frame, out),
               *plot_kept_profile(frame, out)]
    print(f"plots: {len(figures)} files in {out}")


def _prompt_report(runs: list[Path], boards: Path, plots: Path, name: str) -> None:
    """The prompt-mode leaderboard and its figures (metric vs speedup per mode; kept segments)."""
    from harness.report.prompt_board import load_prompt_rows, plot_kept_segments, plot_modes, write_prompt_board

    frame = load_prompt_rows(runs)
    paths = write_prompt_board(frame, boards, f"{name}_prompts")
    figures = [*plot_modes(frame, plots), *plot_kept_segments(runs, plots)]
    print("prompt-mode leaderboard: " + " ".join(map(str, paths)) + f"; plots: {len(figures)} files in {plots}")


def _existing_runs(paths: list[str]) -> list[Path]:
    runs = [Path(path) for path in paths]
    for run in runs:
        if not (run / "results.jsonl").is_file():
            raise HarnessError(f"{run} is not a run folder: it has no results.jsonl")
    return runs


def _list() -> None:
    """Every name the harness knows, with one line about it and where it came from."""
    from harness.data.tasks import TASKS
    from harness.models import FAMILIES
    from harness.models.catalog import MODELS, WEIGHTS
    from harness.pruning.methods import METHODS
    from harness.pruning.profile import PROFILES
    from harness.registry import describe
    from harness.runners.protocols import PROTOCOLS

    def section(title: str, registry, about=describe) -> None:
        print(f"{title}:")
        for name, entry in registry.items():
            print(f"  {name:<12} {about(entry)}  [{registry.source(name)}]")

    section("models", MODELS, lambda spec: f"{spec.hub_id or 'no hub id'}: {spec.description} (family {spec.family})")
    section("families", FAMILIES, lambda family: f"{family.kind}: {family.description}")
    section("tasks", TASKS, lambda task: f"{task.description} (protocols: {', '.join(task.protocols)})")
    print("  (or a task file: --tasks ./my_task.yaml, see the README)")
    section("methods", METHODS)
    section("protocols", PROTOCOLS)
    print("profiles: " + ", ".join(PROFILES.names()))
    print("weights:  " + ", ".join(WEIGHTS))
    print("devices:  cpu, cuda, cuda:N")


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
            runs = _existing_runs(args.runs)
            _board(runs, Path(args.out), args.name or runs[0].name)
        elif args.command == "plot":
            from harness.report.leaderboard import load_rows

            runs = _existing_runs(args.runs)
            _figures(load_rows(runs), Path(args.out) if args.out else PLOTS / runs[0].name)
        elif args.command == "list":
            _list()
    except HarnessError as error:
        print(f"harness: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted; finished cells are saved, rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
