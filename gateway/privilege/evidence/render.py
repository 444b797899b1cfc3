"""The evidence report for tools (JSON) and for people (Markdown, and one self-contained HTML page).

Every renderer reads the report's plain data (gateway.privilege.evidence.report), so the CLI renders
the admin API's JSON with the same code the API uses. Everything shown is escaped: fact statements
quote names that came from manifests and agent records.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import orjson

FORMATS = ("md", "html", "json")
STATUS_TEXT = {"met": "MET", "gap": "GAP", "not_applicable": "NOT APPLICABLE"}
FACT_MARK = {"ok": "ok", "problem": "problem", "unavailable": "unavailable", "info": "info"}
CONTENT_TYPES = {"md": "text/markdown; charset=utf-8", "html": "text/html; charset=utf-8",
                 "json": "application/json"}


def render(report: dict[str, Any], fmt: str) -> str:
    renderers: dict[str, Callable[[dict[str, Any]], str]] = {"md": markdown, "html": html_page, "json": as_json}
    return renderers[fmt](report)


def as_json(report: dict[str, Any]) -> str:
    return orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()


# Markdown


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Compliance evidence: {_md(report['framework']['title'])}", "", *_md_header(report), ""]
    lines += ["| Control | Status | Why |", "| --- | --- | --- |"]
    for control in report["controls"]:
        why = "; ".join(control["reasons"]) or "every fact below holds"
        lines.append(f"| {control['id']} {_md(control['name'])} | {STATUS_TEXT[control['status']]} | {_md(why)} |")
    for control in report["controls"]:
        lines += ["", f"## {control['id']} {_md(control['name'])}: {STATUS_TEXT[control['status']]}", ""]
        if control["scope"]:
            lines += [f"Scope: {_md(control['scope'])}", ""]
        lines += [f"- {reason}" for reason in map(_md, _unstated(control))]
        for fact in control["facts"]:
            lines.append(f"- **{_md(fact['title'])}** ({FACT_MARK[fact['status']]}): {_md(fact['statement'])}  ")
            lines.append(f"  source: `{fact['source'].replace('`', '')}`")
    return "\n".join(lines) + "\n"


def _md_header(report: dict[str, Any]) -> list[str]:
    summary, period = report["summary"], report["period"]
    return [f"Gateway {_md(report['gateway'])}, generated {report['generated_at']}, period {period['since']} to "
            f"{period['until']}.", "",
            f"{summary['met']} met, {summary['gap']} gap(s), {summary['not_applicable']} not applicable. "
            f"Control list: {report['framework']['reference']}"]


def _md(text: str) -> str:
    # Table cells and lines: no pipes or line breaks from names; HTML in the text stays text.
    return html.escape(str(text).replace("|", "\\|").replace("\r", " ").replace("\n", " "), quote=False)


# HTML

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:70rem;color:#1b1f24;
padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.1rem;margin:0}
.meta{color:#57606a;margin-bottom:1rem}
table{border-collapse:collapse;width:100%;margin:1rem 0}td,th{border:1px solid #d0d7de;padding:.35rem .5rem;
text-align:left;vertical-align:top}th{background:#f6f8fa}
.badge{display:inline-block;padding:.1rem .45rem;border-radius:.3rem;font-weight:600;font-size:.8rem;color:#fff}
.met{background:#1a7f37}.gap{background:#cf222e}.not_applicable{background:#6e7781}
.control{border:1px solid #d0d7de;border-radius:.4rem;padding:.8rem 1rem;margin:1rem 0}
.scope{color:#57606a;margin:.3rem 0}.fact{margin:.4rem 0}.source{font-family:ui-monospace,monospace;
font-size:.85rem;color:#57606a}
.f-ok{color:#1a7f37}.f-problem,.f-unavailable{color:#cf222e}.f-info{color:#57606a}
"""


def html_page(report: dict[str, Any]) -> str:
    title = f"Compliance evidence: {report['framework']['title']}"
    summary, period = report["summary"], report["period"]
    rows = "".join(
        f'<tr><td><a href="#{_h(c["id"])}">{_h(c["id"])}</a></td><td>{_h(c["name"])}</td>'
        f'<td>{_badge(c["status"])}</td></tr>' for c in report["controls"])
    sections = "".join(_html_control(c) for c in report["controls"])
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_h(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head><body>'
        f'<h1>{_h(title)}</h1><p class="meta">Gateway {_h(report["gateway"])} &middot; generated '
        f'{_h(report["generated_at"])} &middot; period {_h(period["since"])} to {_h(period["until"])}</p>'
        f'<p id="summary"><strong>{summary["met"]}</strong> met, <strong>{summary["gap"]}</strong> gap(s), '
        f'<strong>{summary["not_applicable"]}</strong> not applicable. Control list: '
        f'{_h(report["framework"]["reference"])}</p>'
        f'<table><thead><tr><th>Control</th><th>Name</th><th>Status</th></tr></thead><tbody>{rows}</tbody></table>'
        f'{sections}</body></html>\n'
    )


def _html_control(control: dict[str, Any]) -> str:
    reasons = "".join(f"<li>{_h(r)}</li>" for r in _unstated(control))
    facts = "".join(
        f'<div class="fact"><span class="f-{_h(f["status"])}">[{_h(FACT_MARK[f["status"]])}]</span> '
        f'<strong>{_h(f["title"])}</strong>: {_h(f["statement"])}<div class="source">source: {_h(f["source"])}'
        f'</div></div>' for f in control["facts"])
    return (f'<section class="control" id="{_h(control["id"])}"><h2>{_h(control["id"])} {_h(control["name"])} '
            f'{_badge(control["status"])}</h2>'
            + (f'<p class="scope">{_h(control["scope"])}</p>' if control["scope"] else "")
            + (f"<ul>{reasons}</ul>" if reasons else "") + facts + "</section>")


def _unstated(control: dict[str, Any]) -> list[str]:
    """The reasons no fact below already states: why a control is not applicable, or a gap with no failing fact."""
    failing = any(f["status"] in ("problem", "unavailable") for f in control["facts"])
    return [] if failing else list(control["reasons"])


def _badge(status: str) -> str:
    return f'<span class="badge {_h(status)}">{_h(STATUS_TEXT[status])}</span>'


def _h(text: object) -> str:
    return html.escape(str(text), quote=True)
