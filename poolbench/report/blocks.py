"""The blocks a report is made of: plain data that markdown.py, html.py and terminal.py render.

Text in a block is plain (never markup): every string from the data stays a string until a
renderer escapes it for its format. One exception, shared by every renderer: a span between
backticks is inline code (`CODE_SPAN`: a command, a log message, a setting), shown as code in
HTML and Markdown and as is in the terminal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

CODE_SPAN = re.compile(r"`([^`]+)`")


@dataclass
class Badge:
    """A short verdict shown as a coloured label; kind is one of good, mixed, bad, neutral."""

    text: str
    kind: str


Cell = str | Badge


@dataclass
class Heading:
    level: int
    text: str
    opens_experiment: bool = False  # the heading of an experiment's own section


@dataclass
class Para:
    text: str
    strong: bool = False
    muted: bool = False


class NoticeKind(StrEnum):
    """A notice's kind: the HTML class and the Markdown/terminal prefix follow it."""

    INFO = "info"
    WARNING = "warning"


@dataclass
class Notice:
    kind: NoticeKind
    text: str


@dataclass
class Table:
    headers: list[str]
    rows: Sequence[Sequence[Cell]]
    align: str = ""  # one letter per column: l or r (default l)
    caption: str | None = None


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Image:
    path: Path  # absolute, under the run directory
    src: str  # relative to the report, e.g. charts/x.png
    alt: str
    caption: str


@dataclass
class Code:
    text: str


@dataclass
class Document:
    title: str
    subtitle: str
    blocks: list[Any] = field(default_factory=list)
