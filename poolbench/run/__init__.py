"""A run: the runner, its record, its events, the watchdog, progress and preflight."""
