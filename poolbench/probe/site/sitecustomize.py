"""poolbench's probe, loaded into every Python process of an app variant (PYTHONPATH).

poolbench prepends this directory to the app's PYTHONPATH when the variant's `probe` is on.
Python imports `sitecustomize` at start-up; this one starts the pool probe when
POOLBENCH_PROBE_DIR is set, then runs the `sitecustomize` the app would have had without it
(the next one on sys.path), so an app's own start-up code is chained, never displaced.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _start_probe() -> None:
    try:
        # from this directory on the app's PYTHONPATH: mypy knows the file only by its
        # package path (poolbench.probe.site._poolbench_probe), hence the ignore
        import _poolbench_probe  # type: ignore[import-not-found]

        _poolbench_probe.start()
    except Exception as exc:
        sys.stderr.write(f"poolbench probe: not started ({exc!r}); app unaffected\n")


def _chain() -> None:
    """Import the sitecustomize this one shadows, as the app's Python would have."""
    import importlib.machinery
    import importlib.util

    paths = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", paths)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)  # its errors are reported by site, as without the probe


_start_probe()
_chain()
