"""The data-quality report: quality over time per integration, as one self-contained HTML page.

It is read from the run ledger and the dead-letter store, and lists every declared integration, those
that never ran too. plotly.js and the styles are embedded, so the page works offline (nothing is
fetched). A run is one Prefect flow run, its flow retries' attempts in it; its state is the ledger's, the name
Prefect shows (QUARANTINED: completed with dead-lettered rows). Shares are per run (dead-lettered of that run's
rows read); the failing checks count checks, and one dead-lettered record can fail several. Each run links to its
page in the Prefect UI when the UI's address is known (Prefect's
`PREFECT_UI_URL`, or one derived from `PREFECT_API_URL`). A person's approval decisions are listed per
integration. The local part of every email address in the page's data is masked.
"""

from __future__ import annotations

import html
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import sqlalchemy as sa
from prefect.utilities.urls import url_for

from interlink.connectors.masking import mask, mask_emails
from interlink.connectors.sql import utcnow
from interlink.ledger import Ledger
from interlink.state import DEAD_LETTERS, RUNS, state_engine

RUNS_SHOWN = 200  # runs per integration in the charts
LATEST = 10  # runs per integration in the table
TOP = 10  # failing checks per integration in the table
EXAMPLES = 3  # offending values shown per failing check
_COLUMN = re.compile(r"\((\w+)\)$")
_RUN_COLUMNS = ("id", "flow_run_id", "kind", "state", "attempts", "started_at", "rows_read", "rows_inserted", "rows_updated",
                "rows_unchanged", "rows_quarantined", "share", "watermark", "circuits", "error")
_DECISION_COLUMNS = ("id", "flow_run_id", "started_at", "state", "decision")
_HEADS = {"flow_run_id": "Prefect run", "share": "dead-lettered share"}
_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; color: #222; margin: 24px auto; max-width: 1240px; padding: 0 16px; }
h1 { margin-bottom: 4px; } h2 { margin: 32px 0 4px; border-bottom: 2px solid #ddd; } .muted { color: #666; }
.charts { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
table { border-collapse: collapse; margin: 12px 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; } th { background: #f4f4f4; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.COMPLETED { color: #1a7f37; } .QUARANTINED { color: #9a6700; } .FAILED, .CRASHED { color: #cf222e; font-weight: bold; } .RUNNING { color: #0969da; }
.QUARANTINED { color: #9a6700; font-weight: bold; }
"""


def build_report(state_url: str, path: Path, declared: Mapping[str, tuple[str, ...]] | None = None) -> Path:
    """Write the report on the ledger and dead letters at `state_url` to `path`; returns `path`.

    `declared` names every integration (each has a section, runs or not) with its sensitive columns,
    whose values are masked wherever shown.
    """
    ledger = Ledger(state_url)
    columns = [DEAD_LETTERS.c[name] for name in ("integration", "stage", "reason", "values", "status")]
    with state_engine(state_url).connect() as conn:
        names = conn.scalars(sa.select(RUNS.c.integration).distinct()).all()
        letters = [dict(row._mapping) for row in conn.execute(sa.select(*columns))]
    runs = [run for name in names for run in ledger.runs(name, RUNS_SHOWN)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(runs, letters, declared or {}), encoding="utf-8")
    return path


def render(runs: list[dict[str, Any]], letters: list[dict[str, Any]], declared: Mapping[str, tuple[str, ...]] | None = None) -> str:
    """The page for these ledger rows (in any order) and dead-letter entries; `declared` as for `build_report`."""
    declared = declared or {}
    names = sorted(set(declared) | {r["integration"] for r in runs} | {d["integration"] for d in letters})
    sections, embed_js = [], iter([True])  # plotly.js goes in with the first chart only
    for name in names:
        mine = sorted((r for r in runs if r["integration"] == name), key=lambda r: r["id"])
        charts = [_chart(fig, f"{name}-{kind}", next(embed_js, False)) for kind, fig in _figures(mine)] if mine else []
        decided = [r for r in reversed(mine) if r.get("decision")]
        sections.append(
            f'<section id="{_text(name)}"><h2>{_text(name)}</h2>{_summary(mine, letters, name)}'
            + (f'<div class="charts">{"".join(charts)}</div>' if charts else "")
            + f"<h3>Most frequent failing checks</h3>{_failing((d for d in letters if d['integration'] == name), declared.get(name, ()))}"
            + "<h3>Approval decisions</h3>"
            + (_table(_DECISION_COLUMNS, [_shown(r, _DECISION_COLUMNS) for r in decided]) if decided else "<p>None.</p>")
            + (f"<h3>Latest runs</h3>{_table(_RUN_COLUMNS, [_shown(r, _RUN_COLUMNS) for r in reversed(mine[-LATEST:])])}" if mine else "")
            + "</section>"
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Interlink data quality</title>'
        f"<style>{_CSS}</style></head><body><h1>Interlink data quality</h1>"
        f'<p class="muted">Generated {utcnow():%Y-%m-%d %H:%M} UTC from the run ledger and the dead-letter store.</p>'
        f"{''.join(sections) or '<p>No runs recorded yet.</p>'}</body></html>"
    )


def _figures(runs: list[dict[str, Any]]) -> list[tuple[str, go.Figure]]:
    """Rows delivered and quarantined per run, and rows read per run, over time."""
    x = [r["started_at"] for r in runs]
    hover = [f"run {r['id']} · {r['kind']} · {r['state']}" for r in runs]
    delivery = go.Figure(
        [
            go.Scatter(x=x, y=[r["rows_inserted"] + r["rows_updated"] for r in runs], name="delivered", text=hover,
                       mode="lines+markers", line_color="#1a7f37"),
            go.Scatter(x=x, y=[r["rows_quarantined"] for r in runs], name="quarantined", text=hover,
                       mode="lines+markers", line_color="#cf222e"),
        ]
    )
    volume = go.Figure(go.Scatter(x=x, y=[r["rows_read"] for r in runs], name="read", text=hover,
                                  mode="lines+markers", fill="tozeroy", line_color="#0969da"))
    for fig, title in ((delivery, "Rows delivered and quarantined per run"), (volume, "Rows read per run")):
        fig.update_layout(title=title, template="plotly_white", height=300, margin=dict(l=50, r=20, t=50, b=40),
                          legend=dict(orientation="h", x=1, xanchor="right", y=1.15), showlegend=True)
    return [("delivery", delivery), ("volume", volume)]


def _chart(fig: go.Figure, div_id: str, embed_js: bool) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=embed_js, div_id=div_id, config={"displaylogo": False})


def _shown(run: dict[str, Any], columns: tuple[str, ...]) -> list[Any]:
    """The run's values in `columns`; `share` is its dead-lettered rows' share of its rows read."""
    return [_share(run) if column == "share" else run[column] for column in columns]


def _share(run: dict[str, Any]) -> str:
    return f"{run['rows_quarantined'] / run['rows_read']:.1%}" if run["rows_read"] else ""


def _summary(runs: list[dict[str, Any]], letters: list[dict[str, Any]], name: str) -> str:
    if not runs:
        return '<p class="muted">No runs recorded yet. This integration has never run here.</p>'
    mine = [d for d in letters if d["integration"] == name]  # one per record, however often it failed again
    still_open = sum(d["status"] == "open" for d in mine)
    last = runs[-1]
    share = f" ({_share(last)} of its rows read)" if last["rows_read"] else ""
    return (
        f'<p>{len(runs)} runs shown; the last, run {last["id"]}, is <span class="{_text(last["state"])}">{_text(last["state"])}'
        f"</span> (started {last['started_at']:%Y-%m-%d %H:%M} UTC{_attempts(last)}): read {last['rows_read']:,}, delivered "
        f"{last['rows_inserted'] + last['rows_updated']:,}, dead-lettered {last['rows_quarantined']:,} rows{share}. "
        f"Dead-letter store: {len(mine):,} records, {still_open:,} open.</p>"
    )


def _attempts(run: dict[str, Any]) -> str:
    return f", {run['attempts']} attempts" if run.get("attempts", 1) > 1 else ""


def _failing(letters: Iterable[dict[str, Any]], sensitive: tuple[str, ...]) -> str:
    """Failed checks by how many dead letters name them (each reason's `; `-joined parts, up to the `:`), with a line
    saying how many records failed how many checks: a record that fails several checks counts once in each."""
    count, still_open, examples, records = Counter(), Counter(), defaultdict(list), 0
    for letter in letters:
        records += 1
        for part in letter["reason"].split("; "):
            check = (part.split(":", 1)[0].strip(), letter["stage"])
            count[check] += 1
            still_open[check] += letter["status"] == "open"
            column = _COLUMN.search(check[0])
            value = letter["values"].get(column[1]) if column else None
            example = None if value is None else _example(column[1], value, sensitive)
            if example is not None and example not in examples[check] and len(examples[check]) < EXAMPLES:
                examples[check].append(example)
    rows = [[check, stage, n, still_open[check, stage], ", ".join(examples[check, stage])]
            for (check, stage), n in count.most_common(TOP)]
    if not rows:
        return "<p>No dead letters.</p>"
    failed = sum(count.values())
    return (
        f'<p class="muted">Counted in checks, not records: {records:,} dead-lettered records failed {failed:,} checks in all '
        "(a record can fail several, and counts once under each).</p>"
        + _table(("check", "stage", "failed checks", "open", "examples"), rows)
    )


def _example(column: str, value: Any, sensitive: tuple[str, ...]) -> str:
    """An offending value as shown: a sensitive or email column's masked whole, emails masked anywhere."""
    text = str(mask(value)) if column in sensitive or "email" in column else mask_emails(str(value))
    return repr(text) if isinstance(value, str) else text


def _table(columns: tuple[str, ...], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_text(_HEADS.get(c, c.removeprefix('rows_')))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(column, value) for column, value in zip(columns, row, strict=True)) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(column: str, value: Any) -> str:
    if isinstance(value, int):
        return f'<td class="n">{value if column == "id" else f"{value:,}"}</td>'
    if column == "state":
        return f'<td class="{_text(value)}">{_text(value)}</td>'
    if column == "flow_run_id":
        return _run_link(value)
    text = "" if value is None else f"{value:%Y-%m-%d %H:%M:%S}" if column == "started_at" else mask_emails(str(value))
    if len(text) > 100 and column != "decision":  # the whole text on hover (a decision is shown whole)
        return f'<td title="{_text(text)}">{_text(text[:99])}…</td>'
    return f"<td>{_text(text)}</td>"


def _run_link(flow_run_id: str | None) -> str:
    """The flow run's id, linked to its page in the Prefect UI when the UI's address is known."""
    if not flow_run_id:
        return "<td></td>"
    url = url_for("flow-run", obj_id=flow_run_id)
    short = _text(flow_run_id[:8])
    return f'<td><a href="{html.escape(url)}" title="{_text(flow_run_id)}">{short}</a></td>' if url else f'<td title="{_text(flow_run_id)}">{short}</td>'


def _text(value: Any) -> str:
    """`value` as HTML text, its email addresses masked."""
    return html.escape(mask_emails(str(value)))
