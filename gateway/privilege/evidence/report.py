"""One framework's evidence report, as the plain data every renderer (JSON, Markdown, HTML) reads."""

from __future__ import annotations

from typing import Any

from gateway.privilege.evidence.facts import compute, origin
from gateway.privilege.evidence.frameworks import framework
from gateway.privilege.evidence.model import GAP, MET, NOT_APPLICABLE, control_dict
from gateway.privilege.evidence.model import iso_time as _iso
from gateway.privilege.evidence.sources import EvidenceRun, EvidenceSources

REPORT_VERSION = 1


async def build_report(sources: EvidenceSources, framework_name: str, window_s: float) -> dict[str, Any]:
    """The report for `framework_name` over the last `window_s` seconds; ValueError for an unknown framework."""
    chosen = framework(framework_name)
    now = sources.clock()
    run = EvidenceRun(sources, since=now - window_s, now=now)
    facts = await compute(run, chosen.fact_ids())
    controls = [control_dict(control, facts) for control in chosen.controls]
    return {
        "report_version": REPORT_VERSION,
        "framework": {"id": chosen.id, "title": chosen.title, "reference": chosen.reference},
        "gateway": origin(sources.settings.base_url),  # a URL's user info, path or query may hold a secret
        "generated_at": _iso(now),
        "period": {"since": _iso(run.since), "until": _iso(now), "seconds": window_s},
        "summary": {status: sum(c["status"] == status for c in controls) for status in (MET, GAP, NOT_APPLICABLE)},
        "controls": controls,
    }
