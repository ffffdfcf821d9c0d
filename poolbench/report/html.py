"""report.html: one self-contained file — inline CSS, charts as base64 data URIs, no scripts,
no fonts or anything else fetched from anywhere. Every string from the data goes through
html.escape.
"""

from __future__ import annotations

import base64
import html

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

CSS = """
:root { --ink:#1f2328; --muted:#59636e; --line:#d1d9e0; --soft:#f6f8fa; --accent:#0969da; }
* { box-sizing: border-box; }
body { margin:0; background:#eef1f4; color:var(--ink);
  font: 15px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", "Noto Sans", Helvetica,
    Arial, sans-serif; }
main { max-width: 1180px; margin: 24px auto; background:#fff; padding: 36px 48px 48px;
  border:1px solid var(--line); border-radius: 10px; }
header.top { border-bottom: 1px solid var(--line); padding-bottom: 14px; margin-bottom: 18px; }
.kicker { color: var(--muted); font-size: 13px; letter-spacing: .02em; margin: 0 0 4px; }
h1 { font-size: 34px; line-height: 1.2; margin: 0 0 6px; letter-spacing: -.01em; }
h2 { font-size: 22px; margin: 38px 0 12px; padding-bottom: 6px;
  border-bottom: 1px solid var(--line); }
h2.experiment { margin-top: 56px; padding: 10px 14px; background: var(--soft);
  border: 1px solid var(--line); border-left: 6px solid var(--accent); border-radius: 4px; }
h3 { font-size: 19px; margin: 30px 0 10px; }
p { margin: 8px 0 12px; }
p.lead { font-size: 16px; font-weight: 600; }
p.muted { color: var(--muted); font-size: 13.5px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 18px; font-size: 13.5px; }
caption { text-align: left; font-weight: 600; padding: 4px 0 6px; }
th, td { border-bottom: 1px solid var(--line); padding: 6px 10px; vertical-align: top;
  text-align: left; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fafbfc; }
table.kv td:first-child { white-space: nowrap; width: 1%; padding-right: 28px; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td:first-child { font-weight: 500; }
.badge { display: inline-block; padding: 1px 9px; border-radius: 999px; font-size: 12.5px;
  font-weight: 600; white-space: nowrap; border: 1px solid transparent; }
.badge.wrap { white-space: normal; }
.good { background: #dafbe1; color: #116329; border-color: #aceebb; }
.mixed { background: #fff8c5; color: #7d4e00; border-color: #f0dc8c; }
.bad { background: #ffebe9; color: #a40e26; border-color: #ffcecb; }
.neutral { background: #eef1f4; color: #454c54; border-color: #d1d9e0; }
.notice { border-left: 4px solid var(--accent); background: #ddf4ff; padding: 8px 14px;
  margin: 10px 0; border-radius: 0 6px 6px 0; font-size: 14px; }
.notice.warning { border-color: #bf8700; background: #fff8c5; }
figure { margin: 18px 0 26px; }
figure img { width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
pre { background: #1f2328; color: #f0f3f6; padding: 12px 16px; border-radius: 6px;
  overflow-x: auto; font: 13px/1.5 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
ul { margin: 6px 0 14px; padding-left: 22px; }
code { font: 0.92em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  background: var(--soft); padding: 0 4px; border-radius: 4px; }
footer { color: var(--muted); font-size: 12px; margin-top: 36px; }
"""


def esc(value: object) -> str:
    """Escaped text; a span between backticks becomes <code> (blocks.CODE_SPAN)."""
    parts = CODE_SPAN.split(str(value))
    return "".join(
        f"<code>{html.escape(p, quote=True)}</code>" if i % 2 else html.escape(p, quote=True)
        for i, p in enumerate(parts)
    )


def attr(value: object) -> str:
    """Escaped text for an attribute or a <title>, where no markup may go."""
    return html.escape(str(value), quote=True)


def _cell(cell: Cell, tag: str, align: str) -> str:
    cls = ' class="r"' if align == "r" else ""
    if isinstance(cell, Badge):
        wrap = " wrap" if len(cell.text) > 28 else ""
        inner = f'<span class="badge {attr(cell.kind)}{wrap}">{esc(cell.text)}</span>'
    else:
        inner = esc(cell)
    return f"<{tag}{cls}>{inner}</{tag}>"


def _table(table: Table) -> str:
    align = (table.align or "").ljust(len(table.headers), "l")
    parts = ["<table>" if any(table.headers) else '<table class="kv">']
    if table.caption:
        parts.append(f"<caption>{esc(table.caption)}</caption>")
    if any(table.headers):  # a key/value table has no header row worth showing
        parts.append(
            "<thead><tr>"
            + "".join(_cell(h, "th", a) for h, a in zip(table.headers, align, strict=False))
            + "</tr></thead>"
        )
    parts.append("<tbody>")
    for row in table.rows:
        parts.append(
            "<tr>" + "".join(_cell(c, "td", a) for c, a in zip(row, align, strict=False)) + "</tr>"
        )
    parts.append("</tbody></table>")
    return "".join(parts)


def _image(block: Image) -> str:
    data = base64.b64encode(block.path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{attr(block.alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{esc(block.caption)}</figcaption></figure>"
    )


def render_html(doc: Document) -> str:
    body = [
        '<header class="top">',
        f'<p class="kicker">{esc(doc.subtitle)}</p>',
        f"<h1>{esc(doc.title)}</h1>",
        "</header>",
    ]
    for block in doc.blocks:
        if isinstance(block, Heading):
            level = min(max(block.level, 2), 4)
            cls = ' class="experiment"' if block.opens_experiment else ""
            body.append(f"<h{level}{cls}>{esc(block.text)}</h{level}>")
        elif isinstance(block, Para):
            cls = ' class="lead"' if block.strong else ' class="muted"' if block.muted else ""
            body.append(f"<p{cls}>{esc(block.text)}</p>")
        elif isinstance(block, Notice):
            body.append(f'<div class="notice {attr(block.kind)}">{esc(block.text)}</div>')
        elif isinstance(block, Table):
            body.append(_table(block))
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Image):
            body.append(_image(block))
        elif isinstance(block, Code):
            body.append(f"<pre><code>{attr(block.text)}</code></pre>")
    body.append("<footer>Generated by poolbench from the files of this run only.</footer>")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # no network at all: the page is readable offline and cannot leak a request
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'\">"
        f"<title>{attr(doc.title)}</title><style>{CSS}</style></head>"
        "<body><main>\n" + "\n".join(body) + "\n</main></body></html>\n"
    )
