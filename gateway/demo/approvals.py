"""Which of the demo agent's calls will ask a person for approval, and why: asked of the policies themselves.

Every catalogued tool is decided by the real policy engine, over the real `cedar/` directory, for
the real agent record, three times: inside working hours, outside them, and after the task read
sensitive data. A tool that needs an approval in some of these and not others is reported with the
condition; the reason is the deciding policy's own `@reason`. Nothing here is a hard-coded sentence
about the shipped policies: change a policy and the banner changes with it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from gateway.catalog.model import Catalog
from gateway.config import Settings
from gateway.identity.principal import Principal
from gateway.policy.engine import NO_CHAIN, Decision, PolicyEngine, RequestFacts
from gateway.policy.hours import DAY_NAMES, WorkingHours
from gateway.registry.model import Agent

ALWAYS = "on every call"
AFTER_HOURS = "outside working hours"
AFTER_SENSITIVE_READ = "after the task read sensitive data"
MODES = {"hold": "the call waits until a person decides",
         "pending": "the call answers at once with an approval link; retry it once approved",
         "auto": "a client that can open the console link waits until a person decides; any other gets the "
                 "approval link at once and retries once approved"}


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    """Tools that ask for an approval under one condition, for one reason."""

    when: str
    tools: tuple[str, ...]
    policy_ids: tuple[str, ...]
    reason: str
    mode: str


def approval_rules(settings: Settings, catalog: Catalog, agent: Agent, now: float | None = None) -> list[ApprovalRule]:
    engine = PolicyEngine(settings.policies_dir, catalog,
                          working_hours=WorkingHours.from_mapping(settings.policy.working_hours))
    principal = Principal(agent.id, "static-token", agent=agent)
    default_mode = settings.approvals.default_mode
    moment = time.time() if now is None else now
    inside = RequestFacts(now=moment, era="2026-07-28", working_hours=True)
    outside = RequestFacts(now=moment, era="2026-07-28", working_hours=False)
    sensitive = RequestFacts(now=moment, era="2026-07-28", working_hours=True,
                             chain={**NO_CHAIN, "sensitive_read": True})
    grouped: dict[tuple[str, tuple[str, ...], str, str], list[str]] = defaultdict(list)
    for name, tool in sorted(catalog.tools.items()):
        decisions = {facts_name: engine.decide_tool(principal, tool, {}, facts)
                     for facts_name, facts in (("inside", inside), ("outside", outside), ("sensitive", sensitive))}
        rule = _condition(decisions)
        if rule is not None:
            when, decision = rule
            grouped[(when, decision.policy_ids, decision.reason, decision.step_up_mode or default_mode)].append(name)
    order = (ALWAYS, AFTER_HOURS, AFTER_SENSITIVE_READ)
    return sorted((ApprovalRule(when, tuple(tools), ids, reason, mode)
                   for (when, ids, reason, mode), tools in grouped.items()),
                  key=lambda rule: (order.index(rule.when), rule.policy_ids))


def _condition(decisions: dict[str, Decision]) -> tuple[str, Decision] | None:
    """When this tool asks for an approval (and the decision that says so), or None if it never does."""
    inside, outside, sensitive = decisions["inside"], decisions["outside"], decisions["sensitive"]
    if inside.outcome == "step_up":
        return ALWAYS, inside
    if outside.outcome == "step_up":
        return AFTER_HOURS, outside
    if sensitive.outcome == "step_up":
        return AFTER_SENSITIVE_READ, sensitive
    return None


def describe_hours(hours: WorkingHours, now: float | None = None) -> str:
    """E.g. "Working hours are mon-fri 08:00-18:00 UTC; now (Sun 05:12 UTC) is outside them"."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, ZoneInfo(hours.timezone))
    inside = hours.local(moment.timestamp()).working_hours
    state = "inside them" if inside else "outside them"
    return (f"Working hours are {_days(hours.days)} {hours.start}-{hours.end} {hours.timezone}; "
            f"now ({moment.strftime('%a %H:%M')} {hours.timezone}) is {state}")


def _days(days: tuple[str, ...]) -> str:
    """mon-fri for a run of consecutive days, else a comma-separated list."""
    indexes = sorted(DAY_NAMES.index(day) for day in days)
    if len(indexes) > 2 and indexes == list(range(indexes[0], indexes[-1] + 1)):
        return f"{DAY_NAMES[indexes[0]]}-{DAY_NAMES[indexes[-1]]}"
    return ",".join(DAY_NAMES[i] for i in indexes)


def summary_lines(rules: list[ApprovalRule], hours: WorkingHours, now: float | None = None) -> list[str]:
    """The banner's approvals section."""
    if not rules:
        return ["  No call of this agent asks for an approval under the current policies."]
    lines: list[str] = []
    after_hours = any(rule.when == AFTER_HOURS for rule in rules)
    inside = hours.local(time.time() if now is None else now).working_hours
    for rule in rules:
        lines.append(f"  {rule.when}: {', '.join(rule.tools)}")
        lines.append(f"      why: {rule.reason} (policy {', '.join(rule.policy_ids)}; "
                     f"{MODES.get(rule.mode, rule.mode)})")
    if after_hours:
        consequence = "run without asking" if inside else "ask for an approval"
        lines.append(f"  {describe_hours(hours, now)}: the calls listed {AFTER_HOURS} {consequence} right now.")
    return lines
