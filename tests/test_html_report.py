"""``harness report``: the static HTML report, read as text (every row, nothing remote, provenance, bad input)
and driven in a real browser (headless Debian Chromium through Playwright: sort, filter, figures, console)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from test_report import _row, _run_dir

from harness.cli import build_parser, main
from harness.report.compare import compare_frame
from harness.report.html_report import MARKER_FILE, PLOTLY_FILE, REPORT_FILE
from harness.report.leaderboard import load_rows

RUNS = Path(__file__).resolve().parents[1] / "leaderboards" / "runs"
METHODS = RUNS / "methods_rt-polarity"
CHROMIUM = shutil.which("chromium")


def _prompt_rows() -> list[dict]:
    """A run made with --prompts (two modes, few-shot traced) on its own task, for the prompt figures."""
    segments = {"instruction": [0.0] * 3, "demonstrations": [0.8, 0.6, 0.5], "input": [0.2, 0.4, 0.5]}
    return [
        {
            **_row("smollm2", "pretrained", speedup, 0.7 - 0.1 * speedup, task="piqa"),
            "cell_key": f"smollm2|{mode}|{speedup}",
            "protocol": f"prompts/{mode}",
            "prompt_mode": mode,
            "chat_template": False,
            "num_fewshot": 5 if mode == "few-shot" else 0,
            "kept_segments": {**segments, "options": [0.0] * 3} if mode == "few-shot" else None,
        }
        for mode in ("zero-shot", "few-shot")
        for speedup in (1.0, 2.0)
    ]


def _results(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, list[Path]]:
    """One report, built once: the committed 13-method comparison and a small prompt-mode run."""
    root = tmp_path_factory.mktemp("report")
    runs = [METHODS, _run_dir(root, "prompt-run", _prompt_rows())]
    assert main(["report", *map(str, runs), "--out", str(root / "site")]) == 0
    return root / "site", runs


def _bodies(html: str) -> list[str]:
    return re.findall(r"<tbody [^>]*>.*?</tbody>", html, flags=re.S)


def test_the_report_holds_every_row_and_fetches_nothing(report):
    site, runs = report
    html = (site / REPORT_FILE).read_text()
    cells = [re.search(r'data-cell="([^"]*)"', body).group(1) for body in _bodies(html)]
    expected = [row["cell_key"] for run in runs for row in _results(run)]
    assert len(cells) == len(expected) == 156 + 4 and sorted(cells) == sorted(expected)
    remote = (
        r"<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=\s*[\"']?(https?:)?//|@import|url\(\s*[\"']?https?:"
    )
    assert not re.search(remote, html, flags=re.I)
    assert f'<script src="{PLOTLY_FILE}">' in html and (site / PLOTLY_FILE).stat().st_size > 1_000_000
    assert sorted(path.name for path in site.iterdir()) == sorted([REPORT_FILE, PLOTLY_FILE, MARKER_FILE])
    for title in (
        "quality vs measured speedup",
        "kept tokens per layer",
        "prompt modes",
        "where the kept tokens",
    ):
        assert f"{title}" in html, title


def test_the_frontier_stars_are_compare_frames(report):
    """★ on exactly the rows whose (method, speedup) ``harness compare`` puts on the frontier (every seed)."""
    site, _ = report
    table = compare_frame(load_rows([METHODS]))
    front = {(row.method, f"{row.speedup:g}") for row in table.itertuples() if row.frontier}
    section = (site / REPORT_FILE).read_text().split('id="task-rt-polarity"')[1]
    starred = {
        (
            re.search(r'data-method="([^"]*)"', body).group(1),
            re.search(r'data-speedup="([^"]*)"', body).group(1),
        )
        for body in _bodies(section)
        if '<td data-sort="1">★</td>' in body
    }
    assert 1 < len(front) < len(table) and starred == front


def test_each_row_names_the_command_that_reproduces_it(report):
    site, _ = report
    html = (site / REPORT_FILE).read_text()
    row = next(row for row in _results(METHODS) if row["method"] == "tome" and row["speedup"] == 3.0)
    body = next(body for body in _bodies(html) if f'data-cell="{row["cell_key"]}"' in body)
    command = re.search(r"<dt>command</dt><dd><code>(.*?)</code>", body).group(1).replace("&#39;", "'")
    args = build_parser().parse_args(shlex.split(command)[1:])
    sweep = json.loads((METHODS / "sweep.json").read_text())["config"]
    assert (args.command, args.models, args.tasks, args.methods, float(args.speedups)) == (
        "run",
        "minilm",
        "rt-polarity",
        "tome",
        3.0,
    )
    assert (args.seeds, args.batch_size, args.max_length, args.epochs, args.out) == (
        sweep["seeds"],
        sweep["batch_size"],
        sweep["max_length"],
        sweep["train"]["epochs"],
        sweep["out"],
    )
    for text in (row["timestamp"], row["harness_version"], row["hardware"]["os"], "checkpoint"):
        assert text in body, text


def _failing(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: error: ") and err.count("\n") == 1
    return err


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "is not a run folder"),
        ("no results", "is not a run folder: it has no results.jsonl"),
        ("out is a file", "is a file; give a folder"),
        ("out holds other files", "holds other files than a report"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case, message):
    run, out = METHODS, tmp_path / "site"
    if case == "missing":
        run = tmp_path / "nowhere"
    elif case == "no results":
        (run := tmp_path / "empty").mkdir()
    elif case == "out is a file":
        out.write_text("mine")
    else:
        out.mkdir()
        (out / "notes.md").write_text("mine")
    before = sorted(path.name for path in tmp_path.rglob("*"))
    assert message in _failing(capsys, ["report", str(run), "--out", str(out)])
    assert sorted(path.name for path in tmp_path.rglob("*")) == before


def test_a_former_report_is_replaced_whole_and_kept_when_a_new_one_fails(tmp_path, capsys):
    good = _run_dir(tmp_path, "good", [_row("minilm", "pretrained", s, 0.9 - 0.05 * s) for s in (1.0, 2.0)])
    out = tmp_path / "site"
    assert main(["report", str(good), "--out", str(out)]) == 0
    (out / "stale.txt").write_text("from an older report")
    assert main(["report", str(good), "--out", str(out)]) == 0
    assert not (out / "stale.txt").exists()
    page = (out / REPORT_FILE).read_text()
    foreign = _run_dir(tmp_path, "foreign", [{**_row("minilm", "pretrained", 1.0, 0.9), "schema": 99}])
    assert "results schema 99" in _failing(capsys, ["report", str(foreign), "--out", str(out)])
    assert (out / REPORT_FILE).read_text() == page
    assert sorted(path.name for path in tmp_path.iterdir()) == ["foreign", "good", "site"]  # no temp folders


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no `chromium` on PATH: the browser test drives Debian's chromium package (`make chromium` "
    "installs it, as root through apt-get)",
)
def test_the_report_sorts_filters_and_draws_in_a_browser(report):
    from playwright.sync_api import sync_playwright

    site, _ = report
    errors, remote = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console", lambda message: errors.append(message.text) if message.type == "error" else None
            )
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on(
                "request",
                lambda request: (
                    remote.append(request.url)
                    if "://" in request.url and not request.url.startswith("file:")
                    else None
                ),
            )
            page.goto((site / REPORT_FILE).as_uri())
            _check_figures(page)
            _check_sorting(page)
            _check_filter_and_provenance(page)
        finally:
            browser.close()
    assert errors == [] and remote == []


def _check_figures(page) -> None:
    page.wait_for_selector(".figure .plotly .main-svg")
    figures = page.locator(".figure").count()
    assert figures >= 5  # quality and kept tokens per task, prompt modes, kept segments
    assert page.locator(".figure .js-plotly-plot .main-svg:first-child").count() == figures
    assert page.locator(".figure .scatterlayer .trace").count() >= figures


def _column(page, section: str, label: str) -> list[str]:
    headers = page.locator(f"{section} table.board th").all_inner_texts()
    index = [header.strip() for header in headers].index(label) + 1
    return page.eval_on_selector_all(
        f"{section} table.board > tbody > tr:first-child > td:nth-child({index})",
        "cells => cells.map(cell => cell.dataset.sort)",
    )


def _check_sorting(page) -> None:
    section = "#task-rt-polarity"
    before = [float(value) for value in _column(page, section, "measured speedup")]
    header = page.locator(f"{section} table.board th", has_text="measured speedup")
    header.click()
    ascending = [float(value) for value in _column(page, section, "measured speedup")]
    assert ascending == sorted(before) and ascending != before
    header.click()
    assert [float(value) for value in _column(page, section, "measured speedup")] == sorted(
        before, reverse=True
    )
    assert header.get_attribute("aria-sort") == "descending"


def _check_filter_and_provenance(page) -> None:
    section = "#task-rt-polarity"
    tome = sum(row["method"] == "tome" for row in _results(METHODS))
    page.select_option(f"{section} select[data-filter=method]", "tome")
    shown = page.eval_on_selector_all(
        f"{section} table.board > tbody", "bodies => bodies.filter(b => !b.hidden).map(b => b.dataset.method)"
    )
    assert shown == ["tome"] * tome and tome == 12
    assert page.locator(f"{section} .count").inner_text() == f"{tome} of 156 rows"
    assert page.locator(f"{section} table.board > tbody:not([hidden]) > tr:first-child").count() == tome
    details = page.locator(f"{section} table.board > tbody:not([hidden]) tr.provenance").first
    assert not details.is_visible()
    page.locator(f"{section} table.board > tbody:not([hidden]) td.toggle button").first.click()
    assert details.is_visible() and "harness run --models minilm --tasks rt-polarity --methods tome" in (
        details.inner_text()
    )
