"""The bench file's closed sets of words, as enums: where the database comes from, and the
load's shape. `StrEnum`, so the file, run.json and Locust's options keep the same words.

A module of its own, with nothing else imported, because Locust's process (poolbench's
plugin, through poolbench.load.shapes) needs the shapes without the bench file's parser.
"""

from __future__ import annotations

from enum import StrEnum


class Provider(StrEnum):
    """Where the PostgreSQL under test comes from (`postgres.provider`)."""

    EMBEDDED = "embedded"  # a throwaway server started for each variant
    URL = "url"  # an existing server: --database-url or DATABASE_URL
    COMPOSE = "compose"  # docker-compose.yml's postgres service


class Shape(StrEnum):
    """How the load's users come and go during the load phase (`load.shape`)."""

    STEADY = "steady"
    RAMP = "ramp"
    SPIKE = "spike"
