"""report.md: the document as GitHub-flavoured Markdown (pastes into a pull request).

Every string from the data is escaped with backslashes, never with HTML entities (which a
reader of the raw file would see as "-&gt;"): `<` and `&` (GitHub renders inline HTML and
entities), a leading `>` (a quote), and Markdown's own table and emphasis characters. A span
between backticks is inline code (blocks.CODE_SPAN) and is written as one, verbatim.
"""

from __future__ import annotations

import re

from poolbench.report.blocks import (
    CODE_SPAN,
    Badge,
    Bullets,
    Cell,
    Code,
    Document,
    Heading,
    Image,
    Notice,
    Para,
    Table,
)

BADGE_MARK = {"good": "✅", "mixed": "🟡", "bad": "❌", "neutral": "⚪"}
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#<&])")


def _plain(value: str) -> str:
    escaped = _MD_SPECIAL.sub(r"\\\1", value)
    return "\\" + escaped if escaped.startswith(">") else escaped


def text(value: str) -> str:
    """Plain text for a Markdown paragraph or table cell; `spans` stay code spans."""
    value = " ".join(str(value).split())  # no newlines inside a block or a cell
    parts = CODE_SPAN.split(value)  # odd indices: the insides of code spans
    code = [f"`{part}`".replace("|", "\\|") for part in parts[1::2]]  # GFM tables: \| in code too
    plain = [_plain(part) for part in parts[::2]]
    return "".join(p + c for p, c in zip(plain, [*code, ""], strict=True))


def _cell(cell: Cell) -> str:
    if isinstance(cell, Badge):
        mark = BADGE_MARK.get(cell.kind, "")
        return f"{mark} **{text(cell.text)}**" if cell.kind != "neutral" else f"{text(cell.text)}"
    return text(cell) if cell != "" else " "


def _table(table: Table) -> list[str]:
    lines = []
    if table.caption:
        lines += [f"**{text(table.caption)}**", ""]
    align = (table.align or "").ljust(len(table.headers), "l")
    lines.append("| " + " | ".join(text(h) if h else " " for h in table.headers) + " |")
    lines.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return [*lines, ""]


def _fence(body: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    return "`" * max(3, longest + 1)


def render_markdown(doc: Document) -> str:
    out = [f"# {text(doc.title)}", "", f"_{text(doc.subtitle)}_", ""]
    for block in doc.blocks:
        if isinstance(block, Heading):
            out += [f"{'#' * block.level} {text(block.text)}", ""]
        elif isinstance(block, Para):
            body = text(block.text)
            out += [f"**{body}**" if block.strong else f"_{body}_" if block.muted else body, ""]
        elif isinstance(block, Notice):
            out += [
                f"> [!{'WARNING' if block.kind == 'warning' else 'NOTE'}]",
                f"> {text(block.text)}",
                "",
            ]
        elif isinstance(block, Table):
            out += _table(block)
        elif isinstance(block, Bullets):
            out += [f"- {text(item)}" for item in block.items] + [""]
        elif isinstance(block, Image):
            alt = text(block.alt).replace("]", "")
            out += [f"![{alt}]({block.src})", "", f"_{text(block.caption)}_", ""]
        elif isinstance(block, Code):
            fence = _fence(block.text)
            out += [f"{fence}sh", block.text, fence, ""]
    return "\n".join(out).rstrip() + "\n"
