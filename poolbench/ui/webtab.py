"""The Database tab, installed into Locust's web UI through its extension points.

- the tab itself: ``template_args["extended_tabs"]``, which Locust's React UI adds to its tab
  bar (its own panel for an extended tab is a table fed every 2 s from /stats/requests: too
  slow and too plain for this view, so that panel stays empty and our script draws into it);
- the data: a route on ``web_ui.app``, ``/poolbench/db.json?since=SEQ``, answering with the
  feed's points after SEQ and a ``Server-Timing`` header (what the answer cost Locust's
  process, in ms), so its cost can be read from the browser;
- the session's view of Locust: ``/poolbench/status``, the runner's state and user count and
  every test's start and stop as Locust's own `test_start` / `test_stop` events stamped them,
  so `poolbench ui` records phases at the right second (Locust's /stats/requests is cached
  for 2 s and serialises every endpoint's statistics);
- the target: Locust's start form lets a person type another host; a start aimed anywhere but
  this machine is refused (poolbench loads loopback only), as Locust refuses a bad form;
- the drawing: ``/poolbench/database.js`` (plain JavaScript, SVG chart, no build step, nothing
  fetched from the internet), added to Locust's index page by an ``after_request`` hook.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request, send_from_directory
from locust.env import Environment
from locust.web import WebUI

from poolbench.load.locust import LOOPBACK
from poolbench.ui.feed import FeedReader

STATIC = Path(__file__).parent / "static"
TAB = {"title": "Database", "key": "database"}
SCRIPT_TAG = '<script src="/poolbench/database.js" defer></script>'


def install(environment: Environment, web_ui: WebUI, feed_path: Path) -> FeedReader:
    """Add the Database tab and its routes to a Locust `WebUI`; returns the feed's reader."""
    reader = FeedReader(feed_path)
    blueprint = Blueprint("poolbench", __name__)
    tests: list[dict[str, float | None]] = []

    @environment.events.test_start.add_listener  # type: ignore[untyped-decorator]  # unannotated in locust
    def test_started(**kwargs: Any) -> None:
        tests.append({"started": time.time(), "stopped": None})

    @environment.events.test_stop.add_listener  # type: ignore[untyped-decorator]  # unannotated in locust
    def test_stopped(**kwargs: Any) -> None:
        if tests and tests[-1]["stopped"] is None:
            tests[-1]["stopped"] = time.time()

    @blueprint.route("/poolbench/status")
    def status() -> Response:
        runner = environment.runner
        assert runner is not None  # Locust creates its runner before its web UI
        total = runner.stats.total
        return Response(
            json.dumps(
                {
                    "state": runner.state,
                    "users": runner.user_count,
                    "rps": total.current_rps,
                    "failures": total.num_failures,
                    "tests": tests,
                }
            ),
            mimetype="application/json",
        )

    @blueprint.route("/poolbench/db.json")
    def feed() -> Response:
        started = time.perf_counter()
        reader.poll()
        since = request.args.get("since", default=-1, type=int)
        body = json.dumps(reader.since(since), separators=(",", ":"))
        response = Response(body, mimetype="application/json")
        response.headers["Cache-Control"] = "no-store"
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        response.headers["Server-Timing"] = f"feed;dur={elapsed_ms:.3f}"
        return response

    @blueprint.route("/poolbench/database.js")
    def script() -> Response:
        return send_from_directory(STATIC, "database.js", max_age=0)

    assert web_ui.app is not None  # WebUI.__init__ creates it
    web_ui.app.register_blueprint(blueprint)
    tabs = [t for t in web_ui.template_args.get("extended_tabs", []) if t["key"] != TAB["key"]]
    web_ui.template_args["extended_tabs"] = [*tabs, TAB]

    @web_ui.app.before_request
    def loopback_only() -> Response | None:
        host = request.form.get("host") if request.endpoint == "locust.swarm" else None
        if host and not host.startswith(LOOPBACK):
            message = f"refusing to load {host}: poolbench targets loopback only"
            return jsonify({"success": False, "message": message, "host": environment.host})
        return None

    @web_ui.app.after_request
    def add_script(response: Response) -> Response:
        if request.endpoint == "locust.index" and response.mimetype == "text/html":
            page = response.get_data(as_text=True)
            response.set_data(page.replace("</body>", SCRIPT_TAG + "\n</body>", 1))
        return response

    return reader
