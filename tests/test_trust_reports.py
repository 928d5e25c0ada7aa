"""Reports never show a row twice or a foreign row silently, mark busy-host timings, and stay where told.

Each test here failed before the change it guards (see the report of the change), except the one that
loads every committed ``leaderboards/runs`` folder, which keeps the old rows readable.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from cli_checks import one_line_error
from test_report import _row, _run_dir

from harness import cli

COMMITTED_RUNS = sorted(
    (Path(__file__).resolve().parents[1] / "leaderboards" / "runs").glob("*/results.jsonl")
)


def _rows() -> list[dict]:
    return [_row("minilm", "pretrained", speedup, 0.9 - 0.05 * speedup) for speedup in (1.0, 2.0)]


def _write(run: Path, rows: list[dict]) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    (run / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return run


def _refused(capsys, argv: list[str], *parts: str) -> str:
    """``argv`` exits 2 with one ``harness: error:`` line holding every part."""
    err = one_line_error(capsys, cli.main(argv))
    for part in parts:
        assert part in err, err
    return err


def _files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


# --- 1. one cell twice in one results file ---------------------------------------------------------


@pytest.mark.parametrize("command", ["leaderboard", "compare", "plot"])
def test_one_cell_twice_in_a_results_file_is_refused(workdir, capsys, command):
    first, second = _rows()
    later = dict(first, score=0.1)  # the later value used to be shown (or averaged in) silently
    run = _write(workdir / "runs" / "dup", [first, second, later])
    before = _files(workdir)
    _refused(
        capsys,
        [command, str(run), "--out", str(workdir / "out")],
        str(run / "results.jsonl"),
        first["cell_key"],
        "lines 1 and 3",
        "delete",
    )
    assert _files(workdir) == before  # nothing written


def test_identical_duplicate_rows_are_refused_too(workdir, capsys):
    """Simplest honest rule: a cell is one row; even an identical copy means the file was edited."""
    row = _rows()[0]
    run = _write(workdir / "runs" / "copy", [row, row])
    _refused(capsys, ["leaderboard", str(run), "--out", str(workdir / "out")], "lines 1 and 2")
    assert not (workdir / "out").exists()


# --- 2. the same run folder twice ------------------------------------------------------------------


def test_the_same_run_folder_given_twice_counts_once(workdir, capsys):
    run = _run_dir(workdir / "runs", "x", _rows())
    (workdir / "link").symlink_to(run)
    spellings = [str(run), "runs/x", "./runs/x/", "runs/../runs/x", "link"]
    assert cli.main(["leaderboard", *spellings, "--out", str(workdir / "boards"), "--name", "b"]) == 0
    assert len(pd.read_csv(workdir / "boards" / "b.csv")) == 2
    assert cli._existing_runs(spellings) == [run]
    capsys.readouterr()


def test_load_functions_count_a_run_folder_once(workdir):
    from harness.report.leaderboard import load_rows
    from harness.report.prompt_board import load_prompt_rows

    rows = [dict(row, prompt_mode="zero-shot", chat_template=False, num_fewshot=0) for row in _rows()]
    run = _run_dir(workdir, "p", rows)
    (workdir / "alias").symlink_to(run)
    assert len(load_rows([run, workdir / "alias", run])) == 2
    assert len(load_prompt_rows([run, workdir / "alias"])) == 2


# --- 3. rows of another harness version ----------------------------------------------------------


def test_rows_without_the_report_columns_are_refused_naming_their_version(workdir, capsys):
    old = [
        {key: value for key, value in row.items() if key not in ("hardware", "measured_speedup")}
        for row in _rows()
    ]
    old[0]["harness_version"] = old[1]["harness_version"] = "0.0.3"
    run = _write(workdir / "runs" / "old", old)
    for command in ("leaderboard", "compare"):  # compare showed these rows as "Timed on nan"
        _refused(
            capsys,
            [command, str(run), "--out", str(workdir / "out")],
            f"{run / 'results.jsonl'} line 1",
            "harness 0.0.3",
            "hardware, measured_speedup",
        )
    assert not (workdir / "out").exists()
    del old[0]["harness_version"]
    _write(run, old)
    _refused(
        capsys, ["leaderboard", str(run), "--out", str(workdir / "out")], "too old to record its version"
    )


def test_rows_of_a_newer_schema_are_refused(workdir, capsys):
    from harness.report.store import RESULTS_SCHEMA

    assert RESULTS_SCHEMA == 2
    rows = _rows()
    rows[1].update(schema=RESULTS_SCHEMA + 1, harness_version="9.0.0")
    run = _write(workdir / "runs" / "new", rows)
    _refused(
        capsys,
        ["leaderboard", str(run), "--out", str(workdir / "out")],
        "line 2 was written by harness 9.0.0 with results schema 3; this harness reads up to 2; upgrade",
    )
    assert not (workdir / "out").exists()
    rows[1]["schema"] = RESULTS_SCHEMA  # this harness's own rows, and schema-1 rows (no "schema"), are read
    _write(run, rows)
    assert cli.main(["leaderboard", str(run), "--out", str(workdir / "out")]) == 0


@pytest.mark.parametrize("results", COMMITTED_RUNS, ids=lambda path: path.parent.name)
def test_every_committed_run_still_loads(results):
    from harness.report.compare import compare_frame
    from harness.report.leaderboard import load_rows

    frame = load_rows([results.parent])
    assert len(frame) == len(results.read_text().splitlines()) > 0
    assert frame["hardware"].notna().all() and frame["measured_speedup"].notna().all()
    assert len(compare_frame(frame)) > 0


def test_there_are_committed_runs_to_check():
    assert len(COMMITTED_RUNS) >= 3


# --- 4. busy-host timings are marked -------------------------------------------------------------


def _busy_rows() -> list[dict]:
    """Quiet, busy (5.50x measured at speedup 1 on a loaded host) and not recorded (older rows)."""
    quiet = dict(_rows()[0], host_busy_cores=0.01)
    busy = dict(quiet, method="truncation", cell_key="busy", measured_speedup=5.5, host_busy_cores=1.9)
    return [quiet, busy, _row("tinybert", "pretrained", 1.0, 0.8)]


def test_leaderboard_marks_a_busy_measured_speedup(workdir, capsys):
    run = _run_dir(workdir, "busy", _busy_rows())
    assert cli.main(["leaderboard", str(run), "--out", str(workdir / "boards")]) == 0
    md = (workdir / "boards" / "busy.md").read_text()
    assert md.count(" †") == 1 and "| 5.50 † / 0.97 |" in md
    assert "† timed while other processes used more than 0.25 of a core (up to 1.9 cores)" in md
    csv = pd.read_csv(workdir / "boards" / "busy.csv")
    busy = dict(zip(csv["method"] + " " + csv["model"], csv["host_busy"]))
    assert busy["truncation minilm"] == True and busy["acc minilm"] == False  # noqa: E712
    assert pd.isna(busy["acc tinybert"])  # not recorded: empty, not False
    capsys.readouterr()


def test_prompt_board_marks_a_busy_measured_speedup(workdir, capsys):
    rows = [
        dict(row, prompt_mode="zero-shot", chat_template=False, num_fewshot=0) for row in _busy_rows()[:2]
    ]
    run = _run_dir(workdir, "prompts", rows)
    assert cli.main(["leaderboard", str(run), "--out", str(workdir / "boards")]) == 0
    md = (workdir / "boards" / "prompts_prompts.md").read_text()
    assert md.count(" †") == 1 and "5.50 †" in md and "† timed while other processes used more than" in md
    assert sorted(pd.read_csv(workdir / "boards" / "prompts_prompts.csv")["host_busy"]) == [False, True]
    capsys.readouterr()


def test_compare_csv_says_which_timings_were_busy(workdir, capsys):
    rows = _busy_rows()[:2] + [
        dict(
            _busy_rows()[0],
            cell_key="ttft",
            method="ltp",
            speedup=2.0,
            ttft_speedup=1.2,
            generation_busy_cores=0.7,
        )
    ]
    run = _run_dir(workdir, "cmp", rows)
    assert cli.main(["compare", str(run), "--out", str(workdir / "reports")]) == 0
    table = pd.read_csv(workdir / "reports" / "leaderboards" / "cmp_compare.csv")
    assert sorted(table["host_busy"]) == [False, False, True]
    assert table.set_index("method")["generation_busy"].to_dict()["ltp"] == True  # noqa: E712
    md = (workdir / "reports" / "leaderboards" / "cmp_compare.md").read_text()
    assert "5.50 †" in md and "(up to 1.9 cores)" in md
    capsys.readouterr()


# --- 5. empty --out and --report-dir -------------------------------------------------------------


@pytest.mark.parametrize("option", ["--report-dir", "--out"])
def test_run_refuses_an_empty_folder_option(workdir, capsys, tiny_checkpoint, option):
    argv = [
        "run",
        "--models",
        str(tiny_checkpoint),
        "--weights",
        "random",
        "--tasks",
        "sst2",
        "--speedups",
        "1",
        "--batch-size",
        "2",
        "--max-length",
        "32",
        "--repeats",
        "1",
        "--no-progress",
        option,
        "",
    ]
    _refused(capsys, argv, f"{option} is empty")
    assert _files(workdir) == set()


@pytest.mark.parametrize("command", ["leaderboard", "compare", "plot"])
def test_reports_refuse_an_empty_out(workdir, capsys, command):
    run = _run_dir(workdir / "runs", "x", _rows())
    before = _files(workdir)
    _refused(capsys, [command, str(run), "--out", ""], "--out is empty")
    assert _files(workdir) == before


# --- 6. report names are file-name stems ---------------------------------------------------------


@pytest.mark.parametrize("command", ["leaderboard", "compare"])
@pytest.mark.parametrize("name", ["../../escaped", "a/b", "..", ".", "", "{tmp}/absolute/x"])
def test_report_name_must_be_a_plain_stem(workdir, capsys, command, name):
    name = name.format(tmp=workdir)
    run = _run_dir(workdir / "runs", "x", _rows())
    before = _files(workdir)
    _refused(
        capsys,
        [command, str(run), "--out", str(workdir / "deep" / "out"), "--name", name],
        f"report name {name!r} is not a plain file name",
    )
    assert _files(workdir) == before


def test_default_name_of_a_dot_run_folder_is_its_real_name(workdir, capsys, monkeypatch):
    run = _run_dir(workdir / "runs", "x", _rows())
    monkeypatch.chdir(run)
    assert cli.main(["leaderboard", ".", "--out", str(workdir / "boards")]) == 0
    assert sorted(path.name for path in (workdir / "boards").iterdir()) == ["x.csv", "x.md"]
    assert set(pd.read_csv(workdir / "boards" / "x.csv")["run"]) == {"x"}  # the run column too, not empty
    capsys.readouterr()
