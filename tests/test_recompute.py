"""The at-a-glance figures of a real quick run, recomputed from the raw files by independent code."""

from __future__ import annotations

from pathlib import Path

from recompute import compare

from poolbench.report import build_report


def test_every_glance_figure_of_a_real_run_agrees_with_an_independent_recomputation(
    quick_run: Path,
) -> None:
    build_report(quick_run, charts=False)
    assert compare(quick_run) == []
