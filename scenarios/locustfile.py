"""The bench load: weighted tasks over every router of the sample apps.

Run on its own against a variant started by hand:

    locust -f scenarios/locustfile.py --host http://127.0.0.1:8000 \
        --shape ramp -u 150 -r 50 -t 60s

`--hold-ms` makes the read routes hold their connection in `pg_sleep` for that long,
as a slower query would; `--shape` picks steady, ramp or spike (scenarios/shapes.py).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from locust import FastHttpUser, LoadTestShape, between, events, task

sys.path.insert(0, str(Path(__file__).parent))
import shapes

USER_IDS = range(1, 1001)
ITEM_IDS = range(1, 201)
ORDER_IDS = range(1, 5001)


@events.init_command_line_parser.add_listener
def _add_options(parser) -> None:
    parser.add_argument("--shape", choices=sorted(shapes.SHAPES), default="steady")
    parser.add_argument("--hold-ms", type=int, default=5, help="pg_sleep per read, in ms")


class ApiUser(FastHttpUser):
    """A client of the service: mostly reads, some orders, an occasional report."""

    wait_time = between(0.05, 0.15)

    @property
    def hold(self) -> str:
        return f"sleep_ms={self.environment.parsed_options.hold_ms}"

    @task(6)
    def get_user(self) -> None:
        self.client.get(f"/users/{random.choice(USER_IDS)}?{self.hold}", name="/users/{id}")

    @task(4)
    def list_users(self) -> None:
        self.client.get(f"/users?active=true&limit=20&{self.hold}", name="/users")

    @task(4)
    def search_items(self) -> None:
        self.client.get(f"/items?min_price=1000&limit=20&{self.hold}", name="/items")

    @task(2)
    def get_item(self) -> None:
        self.client.get(f"/items/{random.choice(ITEM_IDS)}", name="/items/{id}")

    @task(5)
    def get_order(self) -> None:
        self.client.get(f"/orders/{random.choice(ORDER_IDS)}?{self.hold}", name="/orders/{id}")

    @task(2)
    def place_order(self) -> None:
        order = {
            "user_id": random.choice(USER_IDS),
            "item_id": random.choice(ITEM_IDS),
            "quantity": 1,
        }
        with self.client.post("/orders", json=order, catch_response=True) as response:
            if response.status_code == 409:  # out of stock is an answer, not a failure
                response.success()

    @task(1)
    def top_items(self) -> None:
        self.client.get("/reports/top-items")

    @task(1)
    def stats(self) -> None:
        self.client.get("/stats/summary")


class BenchShape(LoadTestShape):
    """Users over time from `--shape`, `-u` and `-t`; stops the test at the end of `-t`."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options
        elapsed, duration = self.get_run_time(), float(options.run_time or 60)
        if elapsed >= duration:
            return None
        users = shapes.SHAPES[options.shape](elapsed, options.num_users, duration)
        return users, options.spawn_rate
