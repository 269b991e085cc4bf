"""The report's HTML: one self-contained page (inline CSS, a few lines of inline script for the
gallery's filters, images as data URIs) whose Content-Security-Policy forbids every fetch, so
opening it never touches the network. Every piece of user text goes through `esc`."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

# nothing may be loaded from anywhere: images are data URIs, style and script are inline
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
header{background:#14213d;color:#fff;padding:18px 28px}header h1{margin:0 0 4px;font-size:22px}
nav{padding:6px 28px;background:#e9edf3;position:sticky;top:0;z-index:2}nav a{margin-right:14px;color:#14213d}
main{padding:0 28px 40px;max-width:1300px}section{background:#fff;border:1px solid #ddd;border-radius:6px;
margin:18px 0;padding:12px 18px}h2{margin:4px 0 10px;font-size:18px}h3{font-size:15px;margin:14px 0 6px}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}.chart{max-width:100%;height:auto}
.chart text{font-size:11px;fill:#222}.chart text.v{fill:#555}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border-bottom:1px solid #e3e3e3;
padding:3px 8px;text-align:left;vertical-align:top}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.none{color:#8a5a00;background:#fff8e6;padding:6px 10px;border-radius:4px}.muted{color:#666}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:12px;border-top:1px solid #eee;padding:8px 0}
.ex{border:1px solid #ddd;border-radius:6px;padding:10px;margin:10px 0;display:flex;gap:14px}
.ex img{max-width:200px;max-height:200px;border:1px solid #ccc;display:block;margin-bottom:6px}.ex .body{flex:1;min-width:0}
pre{white-space:pre-wrap;word-break:break-word;background:#f4f4f4;padding:6px;margin:4px 0;max-height:320px;overflow:auto}
.tag{display:inline-block;padding:0 6px;border-radius:3px;background:#e9edf3;margin-right:6px;font-size:12px}
.tag.correct{background:#d7f0df}.tag.wrong{background:#f8d9d4}.filters select{margin-right:12px}
"""

# the gallery's filters: show the examples whose data-verdict / data-subject match
SCRIPT = """
function r1vFilter(){var v=document.getElementById('f-verdict').value,s=document.getElementById('f-subject').value,n=0;
document.querySelectorAll('.ex').forEach(function(e){var ok=(!v||e.dataset.verdict===v)&&(!s||e.dataset.subject===s);
e.style.display=ok?'':'none';n+=ok});document.getElementById('f-count').textContent=n+' shown';}
"""


def esc(value: Any) -> str:
    """Text for HTML content or a quoted attribute: `<`, `>`, `&` and both quotes escaped, so a
    trace holding `</script>` or `<img onerror=...>` stays text."""
    return escape("" if value is None else str(value), quote=True)


def none(message: str) -> str:
    return f'<p class="none">{esc(message)}</p>'


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[bool] = ()) -> str:
    """A plain table; columns flagged in `numeric` are right-aligned and formatted with commas."""
    num = list(numeric) + [False] * (len(header) - len(numeric))
    head = "".join(f"<th{' class=n' if n else ''}>{esc(h)}</th>" for h, n in zip(header, num, strict=True))
    body = "".join(
        "<tr>" + "".join(_cell(v, n) for v, n in zip(row, num, strict=True)) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any, numeric: bool) -> str:
    if not numeric or value is None:
        return f"<td>{esc(value)}</td>"
    text = f"{value:,}" if isinstance(value, int) else f"{value:,.3f}".rstrip("0").rstrip(".")
    return f'<td class="n">{text}</td>'


def section(key: str, title: str, parts: Sequence[str]) -> str:
    """A section: its anchor, its title, then its plots, tables and notes as given (already HTML)."""
    return f'<section id="{key}" data-section="{key}"><h2>{esc(title)}</h2>' + "".join(parts) + "</section>"


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document from (key, title, html) sections."""
    nav = "".join(f'<a href="#{k}">{esc(t)}</a>' for k, t, _ in sections)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style><script>{SCRIPT}</script></head><body>"
        f"<header><h1>{esc(title)}</h1><div>{esc(subtitle)}</div></header><nav>{nav}</nav><main>"
        + "".join(html for _, _, html in sections)
        + "</main></body></html>\n"
    )
