"""Reporting: crash-safe result rows, leaderboards and paper-style figures."""

from harness.report.leaderboard import load_rows, to_markdown, write_leaderboard
from harness.report.plots import plot_kept_profile, plot_measured_vs_predicted, plot_quality_vs_speedup
from harness.report.store import (
    ResultStore,
    read_results,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)

__all__ = [
    "ResultStore",
    "load_rows",
    "plot_kept_profile",
    "plot_measured_vs_predicted",
    "plot_quality_vs_speedup",
    "read_results",
    "to_markdown",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_leaderboard",
    "write_text_atomic",
]
