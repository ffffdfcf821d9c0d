"""Locust plugin: the Database tab of `poolbench ui`. Load it beside any locustfile:

    locust -f locustfile.py,poolbench/ui/locust_db_tab.py --poolbench-feed FEED.jsonl

It only reads: the feed file `poolbench ui` writes (see poolbench/ui/feed.py). Without
--poolbench-feed, or without a web UI (headless, a worker), it does nothing.
"""

from pathlib import Path
from typing import Any

from locust import events
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.web import WebUI


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]  # locust's EventHook.add_listener is unannotated
def _add_options(parser: LocustArgumentParser) -> None:
    parser.add_argument(
        "--poolbench-feed",
        default="",
        include_in_web_ui=False,
        help="the live feed poolbench writes for the Database tab",
    )


@events.init.add_listener  # type: ignore[untyped-decorator]  # locust's EventHook.add_listener is unannotated
def _install(environment: Environment, web_ui: WebUI | None = None, **kwargs: Any) -> None:
    feed = getattr(environment.parsed_options, "poolbench_feed", "")
    if web_ui is not None and feed:
        from poolbench.ui.webtab import install

        install(environment, web_ui, Path(feed))
