"""The report's sections, one function per question, each rendering typed figures as blocks.

A package by subject: `verdicts` (claims, sizing), `figures` (a variant's tables), `pools` (the
model, limits, refused attempts, the pool probe), `run_wide` (events, sweep, thresholds, census,
environment) and `common` (what they share). `document` orders them.
"""

from __future__ import annotations

from poolbench.report.sections.common import unsteady_note, when
from poolbench.report.sections.figures import (
    details_section,
    exact_section,
    instrument_section,
    leak_section,
    little_section,
)
from poolbench.report.sections.pools import (
    attempts_section,
    limits_section,
    model_section,
    pool_probe_section,
)
from poolbench.report.sections.run_wide import (
    census_section,
    environment_section,
    events_section,
    sweep_section,
    thresholds_section,
)
from poolbench.report.sections.verdicts import claims_section, sizing_section

__all__ = [
    "attempts_section",
    "census_section",
    "claims_section",
    "details_section",
    "environment_section",
    "events_section",
    "exact_section",
    "instrument_section",
    "leak_section",
    "limits_section",
    "little_section",
    "model_section",
    "pool_probe_section",
    "sizing_section",
    "sweep_section",
    "thresholds_section",
    "unsteady_note",
    "when",
]
