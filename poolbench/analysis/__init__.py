"""Analysis of a results directory: the typed figures behind summary.json, charts and reports.

A package by question: `windows` (which time windows figures use), `series` (samples → time
series), `connections`, `memory`, `traffic` (per-request throughput and latency), `model` (what
the pool configuration predicts), `leak`, `sizing`, `metrics` (the named metrics), `stats` and
`blocks` (tests across repeats and within a run), `compare`, `claims`, `summary`.

The whole-run entry point is `run_analysis` (`analyse`, `Analysis`). This file imports
nothing, so a module that needs only names (`metrics`, `thresholds`) does not load pandas.

It reads a run only through poolbench.results.run_folder.load_run (docs/results.md), so any
past run can be re-analysed. The baseline of an experiment is its first variant in run.json
order; every other variant is compared to it. Nothing here knows what the answer "should" be.

scipy is imported inside the functions that test or fit (~1 s of start-up): checking a bench
file's thresholds or failing on a bad argument should not pay for it.
"""
