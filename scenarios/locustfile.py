"""The bench load: weighted tasks over every router of the sample apps, plus a health probe.

A plain locustfile: run it on its own against a variant started by hand,

    locust -f scenarios/locustfile.py --host http://127.0.0.1:8000 -u 150 -r 50 -t 60s

or with poolbench's plugin beside it for its load shapes and per-request records
(`-f scenarios/locustfile.py,poolbench/load/plugin.py --poolbench-shape ramp`).
`--hold-ms` is this file's own option (the bench file passes it in `load.locust_args`): the
read routes and placing an order hold their connection in `pg_sleep` for that long, as a slower
query would.
"""

from __future__ import annotations

import random

from locust import FastHttpUser, between, constant, events, task

USER_IDS = range(1, 1001)
ITEM_IDS = range(1, 201)
ORDER_IDS = range(1, 5001)


@events.init_command_line_parser.add_listener
def _add_options(parser) -> None:
    parser.add_argument(
        "--hold-ms", type=int, default=5, help="pg_sleep per request that holds, in ms"
    )


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
        with self.client.post(
            f"/orders?{self.hold}", json=order, name="/orders", catch_response=True
        ) as response:
            if response.status_code == 409:  # out of stock is an answer, not a failure
                response.success()

    @task(1)
    def top_items(self) -> None:
        self.client.get("/reports/top-items")

    @task(1)
    def stats(self) -> None:
        self.client.get("/stats/summary")


class HealthProbe(FastHttpUser):
    """A load balancer's probe: one user calling GET /health about once a second.

    The apps' health check creates and disposes two temporary engines per call (a new backend
    each time), so the probe is what exercises that churn under load.
    """

    fixed_count = 1
    wait_time = constant(1.0)

    @task
    def health(self) -> None:
        self.client.get("/health")
