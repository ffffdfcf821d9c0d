"""A report document in the terminal: headings, paragraphs and tables through rich."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from poolbench.report.blocks import Badge, Bullets, Cell, Document, Heading, Notice, Para, Table

STYLE = {"good": "bold green", "bad": "bold red", "mixed": "bold yellow", "neutral": ""}


def _cell(cell: Cell) -> Text:
    if isinstance(cell, Badge):
        return Text(cell.text, style=STYLE.get(cell.kind, ""))
    return Text(str(cell))


def print_document(doc: Document, console: Console | None = None) -> None:
    console = console or Console(highlight=False, soft_wrap=False)
    console.print(Text(doc.title, style="bold"))
    console.print(Text(doc.subtitle, style="dim"))
    for block in doc.blocks:
        if isinstance(block, Heading):
            console.print()
            console.print(Text(block.text, style="bold underline"))
        elif isinstance(block, Para | Notice):
            console.print(Text(block.text, style="dim" if getattr(block, "muted", False) else ""))
        elif isinstance(block, Bullets):
            for item in block.items:
                console.print(Text(f"  {item}", style="dim"))
        elif isinstance(block, Table):
            table = RichTable(show_header=True, header_style="bold", title=block.caption)
            align = (block.align or "").ljust(len(block.headers), "l")
            for header, a in zip(block.headers, align, strict=True):
                table.add_column(header, justify="right" if a == "r" else "left")
            for row in block.rows:
                table.add_row(*(_cell(c) for c in row))
            console.print(table)
