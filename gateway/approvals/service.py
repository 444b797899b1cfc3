"""Approval requests: created by step-up decisions, decided by people, used once, or left to expire.

Open requests (pending, or approved and not yet used) live in memory so the call path can match a
retried call to its approval without touching disk; every change is written to the store (the
console's inbox and history) and recorded in the audit log. A request is good for exactly one call
with the same agent, task, tool, canonical arguments and policy version; it dies when it is used,
denied, expires, or its task ends or its agent stops being active.

Several replicas share the open requests (gateway.state.approvals.OpenApprovals on Redis): claiming one
(`pop`) succeeds once fleet-wide, a decision is a compare-and-set on the request as it was read, and a
change wakes held calls in every process; the store row follows each change, and says a decision only
once the shared set took it (a conditional write, so a late one never overwrites what happened since).
A granted approval is checked against the agent's lifecycle history and its task's row before it is
used: a cancellation that did not arrive (Redis away, the change made in another replica) cannot leave
it usable.

A hold-mode request exists for the calls waiting on it. When the last of them is gone (its client
disconnected or cancelled it, or the gateway restarted) and no agent was told to retry, nobody is
left to receive the outcome: the request is abandoned, so approving it later grants nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any

from gateway.approvals.model import (
    OPEN_STATES,
    Approval,
    ApprovalError,
    ApprovalNotFound,
    ApprovalState,
    Approver,
    NotAllowedToDecide,
)
from gateway.audit import AuditEvent, AuditLog
from gateway.audit.digests import DigestKey
from gateway.events import Observers
from gateway.registry.model import Agent, Lifecycle, LifecycleEvent
from gateway.registry.service import Registry
from gateway.settings.approvals import ApprovalSettings
from gateway.state.approvals import ApprovalWaiters, OpenApprovals, OpenApprovalsUnreachable
from gateway.state.memory import InMemoryApprovalWaiters, InMemoryOpenApprovals
from gateway.store.base import Store
from gateway.tasks.model import Task, TaskState

log = logging.getLogger("narrowgate.approvals")
Clock = Callable[[], float]
SWEEP_INTERVAL_S = 5.0
COMMENT_MAX = 2000
DECIDE_ATTEMPTS = 3
UNRECORDED = "the request could not be opened in the shared state"
RESTARTED = "abandoned: the gateway restarted while the agent's call was held (a held call does not survive a restart)"
LOST = "cancelled: the shared state no longer held this approval (Redis lost data): it must be asked for again"
STOPPED = (Lifecycle.SUSPENDED, Lifecycle.RETIRED)
CANCEL_RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # a canceller that cannot read the open set tries again, then every 5 s


class ApprovalService:
    def __init__(self, store: Store, registry: Registry, audit: AuditLog, settings: ApprovalSettings,
                 clock: Clock = time.time, digests: DigestKey | None = None,
                 open_approvals: OpenApprovals[Approval] | None = None, waiters: ApprovalWaiters | None = None) -> None:
        """`open_approvals`, `waiters`: the state seams (app.py passes them); None keeps them in memory."""
        self.store = store
        self.digests = digests  # keys the argument digest before a person sees it (None: never shown)
        self.registry = registry
        self.audit = audit
        self.settings = settings
        self.clock = clock
        self.on_new: Observers[[Approval]] = []  # every new request (webhook)
        self.on_change: Observers[[int]] = []  # the pending count after any change (gauge)
        self._open: OpenApprovals[Approval] = open_approvals if open_approvals is not None else InMemoryOpenApprovals()
        self.last_pending_count = 0  # as of the last change or sweep this process saw (the console's badge)
        self._unsaved: dict[str, Approval] = {}  # closed in memory, row not yet written (see _persist_later)
        self._waiters: ApprovalWaiters = waiters if waiters is not None else InMemoryApprovalWaiters()
        self._lock = asyncio.Lock()
        self._sweeper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[object]] = set()
        self._closing = asyncio.Event()

    # lifecycle of the service

    async def open(self, *, background: bool = True) -> None:
        restored = [approval for approval in
                    await self.store.list_approvals(states=[s.value for s in OPEN_STATES], limit=100_000)
                    if await self._open.put(approval)]  # one already open is live in another replica: kept
        for approval in restored:
            if approval.state is ApprovalState.APPROVED and getattr(self._open, "shared", False):
                # Open fleet-wide yet unknown to the shared set: it lost the record of this grant (and may
                # have lost a later denial or use of it). Fail closed: the grant does not come back.
                await self._cancel(approval, LOST)
            else:  # their held calls ended with the previous process
                await self._abandon(approval.id, RESTARTED)
        if self._agent_changed not in self.registry.on_change:
            self.registry.on_change.append(self._agent_changed)
        await self.sweep()
        if background and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="narrowgate-approvals")

    async def close(self) -> None:
        self._closing.set()  # cancellers retrying an unreachable open set give up: the checks at use remain
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # the call path

    async def usable(self, agent_id: str, task_id: str | None, tool: str, args_digest: str, policy_version: str,
                     covers: Callable[[Approval], bool] = lambda approval: True,
                     user: str | None = None) -> Approval | None:
        """A granted, unused, unexpired approval for exactly this call (and that `covers` it), if any."""
        return await self._find(ApprovalState.APPROVED, (agent_id, task_id, tool, args_digest, policy_version, user),
                                covers)

    async def pending_for(self, agent_id: str, task_id: str | None, tool: str, args_digest: str,
                          policy_version: str, user: str | None = None) -> Approval | None:
        return await self._find(ApprovalState.PENDING, (agent_id, task_id, tool, args_digest, policy_version, user))

    async def _find(self, state: ApprovalState, binding: tuple[str, str | None, str, str, str, str | None],
                    covers: Callable[[Approval], bool] = lambda approval: True) -> Approval | None:
        now = self.clock()
        for approval in await self._open.values():
            if approval.state is state and now < approval.expires_at and approval.binds(*binding) and covers(approval):
                outlived = await self._outlived(approval) if state is ApprovalState.APPROVED else None
                if outlived is None:
                    return approval
                await self._cancel(approval, outlived)
        return None

    async def _outlived(self, approval: Approval) -> str | None:
        """Why a granted approval died though it is still open: its agent stopped being active after it was
        asked for, or its task is no longer active. Read from the store, so a cancellation that never
        arrived (Redis away, the change made in another replica) cannot leave it usable."""
        stops = [event for event in await self.store.agent_events(approval.agent_id)
                 if event.at >= approval.created_at and event.to_state in STOPPED]
        if stops:
            return f"agent {approval.agent_id} was {stops[-1].to_state.value} after the request"
        if approval.task_id is None:
            return None
        task = await self.store.get_task(approval.task_id)
        if task is None or task.effective(self.clock()).state is not TaskState.ACTIVE:
            return f"task {approval.task_id} ended"
        return None

    async def request(self, draft: Approval) -> Approval:
        """Store a new request (or return the pending one for the same call: a retry asks once)."""
        async with self._lock:  # two identical calls at once must not both miss the other's request
            existing = await self.pending_for(draft.agent_id, draft.task_id, draft.tool, draft.args_digest,
                                              draft.policy_version, draft.user)
            if existing is not None:
                return existing
            approval = replace(draft, id="apr_" + secrets.token_urlsafe(12), state=ApprovalState.PENDING)
            await self.store.save_approval(approval)
            if not await self._open.put(approval):  # the shared state cannot be reached: nothing can be held
                self._persist_later(replace(approval, state=ApprovalState.CANCELLED, end_reason=UNRECORDED))
                raise ApprovalError("the approval request could not be opened (shared state unavailable)")
        self._record(approval, "requested", approval.agent_id, detail={"reason": approval.reason})
        log.info("approval %s requested: agent %s, tool %s, decision %s, expires in %.0f s", approval.id,
                 approval.agent_id, approval.tool, approval.decision_id, approval.expires_at - approval.created_at)
        for observer in self.on_new:
            observer(approval)
        await self._changed_count()
        return approval

    async def spend(self, approval_id: str, decision_id: str) -> Approval:
        """consume(), with the "used" row on disk before the call goes on: a crash cannot revive it."""
        used = await self.consume(approval_id, decision_id, persist=False)
        self._unsaved[used.id] = used  # readers see "used" while the row is written
        try:
            await self.store.save_approval(used)
            self._unsaved.pop(used.id, None)
        except Exception:
            log.exception("could not record approval %s as used; refusing its call", approval_id)
            self._persist_later(used)
            raise ApprovalError(f"approval {approval_id} could not be recorded as used") from None
        return used

    async def consume(self, approval_id: str, decision_id: str, persist: bool = True) -> Approval:
        """Mark a granted approval used. Claimed by `pop` (atomic, fleet-wide too): two calls never both use it."""
        approval = await self._open.get(approval_id)
        now = self.clock()
        if approval is None or approval.state is not ApprovalState.APPROVED or now >= approval.expires_at:
            raise ApprovalError(f"approval {approval_id} is not available to use")
        outlived = await self._outlived(approval)
        if outlived is not None:
            await self._cancel(approval, outlived)
            raise ApprovalError(f"approval {approval_id} is not available to use ({outlived})")
        used = replace(approval, state=ApprovalState.USED, used_at=now, used_decision_id=decision_id)
        if await self._close(used) is None:  # another call (here or in another replica) claimed it first
            raise ApprovalError(f"approval {approval_id} is not available to use")
        self._record(used, "used", approval.agent_id, detail={"used_decision_id": decision_id})
        if persist:
            self._persist_later(used)
        return used

    async def wait(self, approval_id: str, timeout_s: float) -> Approval:
        """Wait until the request is decided, expires or is cancelled, or `timeout_s` passes."""
        # Already closed (e.g. denied while a held call sent a keepalive): its outcome, not "not found".
        approval = await self.get(approval_id)
        remaining = min(timeout_s, approval.expires_at - self.clock())
        if approval.state is ApprovalState.PENDING and remaining > 0:
            await self._waiters.wait(approval_id, remaining)
        await self.expire_if_due(approval_id)
        # Closed in another replica whose row is not written yet: the row (woken again once it is), as of now.
        current = (await self.get(approval_id)).effective(self.clock())
        if current.state is ApprovalState.EXPIRED:
            # The loop's timer can wake a hair before the wall clock reaches expires_at, so the look above found it
            # not due yet: expire it now, recorded and closed before the caller hears "expired".
            await self.expire_if_due(approval_id)
        return current

    async def current(self, approval_id: str) -> Approval | None:
        approval = await self._open.get(approval_id)
        return None if approval is None else approval.effective(self.clock())

    # held calls

    def hold_begins(self, approval_id: str) -> None:
        """A call now waits on this request (several identical calls may wait on one)."""
        self._waiters.hold_begins(approval_id)

    async def hold_ends(self, approval_id: str, abandoned: str | None = None) -> None:
        """A held call stopped waiting; `abandoned` says why if it left without the outcome."""
        if self._waiters.hold_ends(approval_id) and abandoned is not None:
            # Shielded: the held call may be cancelled while this runs; the request must still be abandoned.
            await asyncio.shield(self._in_background(self._abandon(approval_id, abandoned)))

    def is_held(self, approval_id: str) -> bool:
        """A call in this process is waiting on this request right now."""
        return self._waiters.is_held(approval_id)

    async def told_to_retry(self, approval_id: str) -> None:
        """The agent was answered "retry the identical call" (the pending answer): from now on the request
        is a pending-mode one, good for that retry even when no call waits on it."""
        async with self._lock:
            approval = await self._open.get(approval_id)
            if approval is None or approval.mode != "hold":
                return
            retried = replace(approval, mode="pending")
            if await self._open.put(retried, replacing=approval):  # not over a decision written meanwhile
                await self.store.save_approval_if(retried, ApprovalState.PENDING.value)

    async def _abandon(self, approval_id: str, reason: str) -> None:
        """No call waits for this hold-mode request and no agent was told to retry it: it must never grant."""
        approval = await self._open.get(approval_id)
        if approval is None or approval.mode != "hold" or self._waiters.is_held(approval_id):
            return
        abandoned = replace(approval, state=ApprovalState.ABANDONED, end_reason=reason)
        if await self._close(abandoned) is None:
            return  # closed meanwhile (decided and used, cancelled): that outcome stands
        self._record(abandoned, "abandoned", "narrowgate", detail={"reason": reason})
        self._persist_later(abandoned)
        log.info("approval %s abandoned: %s", approval_id, reason)

    # people

    async def decide(self, approval_id: str, approver: Approver, approve: bool, comment: str = "") -> Approval:
        comment = (comment or "").strip()[:COMMENT_MAX]
        state = ApprovalState.APPROVED if approve else ApprovalState.DENIED
        async with self._lock:
            await self.expire_if_due(approval_id)
            for _ in range(DECIDE_ATTEMPTS):
                approval = await self._decidable(approval_id, approver)  # closed meanwhile: why, from its row
                decided = replace(approval, state=state, decided_by=approver.actor, decided_by_label=approver.label,
                                  decided_at=self.clock(), comment=comment or None)
                # The shared set first (compare-and-set on what was read): of two people deciding at once, here
                # or in another replica, one wins; only then does the row say it.
                if await self._open.put(decided, replacing=approval):
                    break
            else:  # changed under us each time (another replica at work): the person may simply try again
                raise ApprovalError(f"approval {approval_id} changed while it was being decided: try again")
            await self._write_decision(decided, approval)
            if approve:
                self._wake(approval_id)
                await self._changed_count()
            else:
                await self._close(decided)
        self._record(decided, state.value, approver.actor, detail={"comment": comment} if comment else None)
        log.info("approval %s %s by %s", approval_id, state.value, approver.actor)
        return decided

    async def _decidable(self, approval_id: str, approver: Approver) -> Approval:
        """The open, pending request this person may decide; else why not (ApprovalError)."""
        approval = await self._open.get(approval_id)
        if approval is None:
            stored = await self._stored(approval_id)
            if stored.state in OPEN_STATES:  # its row says open, the open set has it not (or cannot be read)
                raise ApprovalError(f"approval {approval_id} cannot be decided now: the gateway cannot see it "
                                    "open (shared state unavailable); try again shortly")
            raise ApprovalError(ended(stored))
        if approval.state is not ApprovalState.PENDING:
            raise ApprovalError(f"approval {approval_id} is already {approval.state.value}")
        refusal = self.refusal(approval, approver)
        if refusal is not None:
            log.warning("approval %s: %s may not decide it (%s)", approval_id, approver.actor, refusal)
            raise NotAllowedToDecide(refusal)
        return approval

    async def _write_decision(self, decided: Approval, approval: Approval) -> None:
        """The row follows the shared set's decision while it still says pending (used, cancelled or
        expired since: that row is the later word). A grant whose row cannot be written is withdrawn."""
        try:
            await self.store.save_approval_if(decided, ApprovalState.PENDING.value)
        except Exception:
            log.exception("could not store the decision on approval %s", decided.id)
            if decided.state is not ApprovalState.APPROVED:
                self._persist_later(decided)  # a denial stands (it closes the request); its row follows
            elif await self._open.put(approval, replacing=decided):  # back to pending, untouched meanwhile
                raise ApprovalError(f"approval {decided.id} could not be recorded: try again") from None

    def may_see_arguments(self, approval: Approval, person: Approver) -> bool:
        """The call's arguments are for the people who may decide it (and admins), not every approver."""
        return person.is_admin or approval.decided_by == person.actor or self.refusal(approval, person) is None

    def shown_to(self, approval: Approval, person: Approver) -> dict[str, Any]:
        """The request as this person may read it: the arguments (their preview, and their digest keyed
        so it cannot be tested against guesses) only if they may see them; the plain digest never."""
        data = approval.to_dict()
        visible = self.may_see_arguments(approval, person)
        data["args_digest"] = self.digests.keyed(approval.args_digest) if visible and self.digests else None
        if not visible:
            data["preview"] = None
            data["preview_hidden"] = "the arguments are shown only to the people who may decide this request"
        return data

    def refusal(self, approval: Approval, approver: Approver) -> str | None:
        """Why this person may not decide this request; None when they may."""
        agent = self.registry.get(approval.agent_id)
        owner = agent.owner if agent is not None else approval.owner
        if approver.name == approval.agent_id or approver.actor == approval.agent_id:
            return "an agent cannot approve its own request"
        if self.settings.forbid_self_approval and (
                approver.name == owner or (approval.task_started_by and approver.actor == approval.task_started_by)):
            return "self-approval is forbidden: the agent's owner or the task's starter cannot approve it"
        if approval.approvers_group is not None:
            groups = [g for g in approval.approvers_group.split(",") if g]
            if groups and all(g in approver.groups for g in groups):
                return None
            if approver.is_admin and self.settings.admins_may_approve:
                return None
            named = " and ".join(repr(g) for g in groups)
            return f"only members of group {named} may decide this request"
        if approver.name == owner or owner in approver.groups:
            return None
        if approver.is_admin and self.settings.admins_may_approve:
            return None
        return f"only the agent's owner ({owner}) may decide this request"

    async def get(self, approval_id: str) -> Approval:
        current = await self.current(approval_id)
        return current if current is not None else await self._stored(approval_id)

    async def list(self, states: list[str] | None = None, agent_id: str | None = None,
                   limit: int = 200) -> list[Approval]:
        await self.sweep()
        approvals = await self.store.list_approvals(states=states, agent_id=agent_id, limit=limit)
        still_open = {a.id: a.effective(self.clock()) for a in await self._open.values()}
        return [still_open.get(a.id, a) for a in approvals]

    async def pending_count(self) -> int:
        now = self.clock()
        count = sum(1 for a in await self._open.values() if a.state is ApprovalState.PENDING and now < a.expires_at)
        self.last_pending_count = count
        return count

    # endings

    def task_ended(self, task: Task) -> None:
        """TaskService.on_end: a task's approvals die with it (started at once; the caller, a synchronous
        observer, does not wait on the shared state)."""
        self._in_background(self._cancel_where(lambda a: a.task_id == task.id,
                                                f"task {task.id} ended ({task.state.value})"))

    def _agent_changed(self, agent: Agent, event: LifecycleEvent) -> None:
        if agent.state is not Lifecycle.ACTIVE:
            self._in_background(self._cancel_where(lambda a: a.agent_id == agent.id,
                                                    f"agent {agent.id} is {agent.state.value}"))

    async def _cancel_where(self, matches: Callable[[Approval], bool], reason: str) -> None:
        for approval in [a for a in await self._open_values_retrying(reason) if matches(a)]:
            await self._cancel(approval, reason)

    async def _open_values_retrying(self, reason: str) -> Sequence[Approval]:
        """The open requests, read again until they can be (never "none" for "could not read"); [] once
        the service closes (the check at use still refuses what was not cancelled)."""
        attempt = 0
        while not self._closing.is_set():
            try:
                return await self._open.values(strict=True)
            except OpenApprovalsUnreachable as exc:
                log.warning("cannot cancel approvals (%s) yet: %s; trying again", reason, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), CANCEL_RETRY_S[min(attempt, len(CANCEL_RETRY_S) - 1)])
            attempt += 1
        return []

    async def _cancel(self, approval: Approval, reason: str) -> None:
        cancelled = replace(approval, state=ApprovalState.CANCELLED, end_reason=reason)
        if await self._close(cancelled) is None:
            return  # closed meanwhile, here or in another replica
        self._record(cancelled, "cancelled", "narrowgate", detail={"reason": reason})
        self._persist_later(cancelled)

    async def expire_if_due(self, approval_id: str) -> None:
        approval = await self._open.get(approval_id)
        if approval is not None:
            await self._expire_if_due(approval)

    async def _expire_if_due(self, approval: Approval) -> None:
        effective = approval.effective(self.clock())
        if effective.state is ApprovalState.EXPIRED and await self._close(effective) is not None:
            self._record(effective, "expired", "narrowgate", detail={"reason": effective.end_reason})
            await self.store.save_approval(effective)
            self._wake(effective.id)  # waiters in other replicas read the row now

    async def sweep(self) -> None:
        for approval in await self._open.values():
            await self._expire_if_due(approval)
        await self.pending_count()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                await self.sweep()
            except Exception:  # a failed sweep must not end sweeping; the next one retries
                log.exception("approval sweep failed")

    # internals

    async def _close(self, approval: Approval) -> Approval | None:
        """Claim the open request to close it as `approval`; the request as it was, or None if it was no
        longer open (closed by someone else first: nothing to record)."""
        claimed = await self._open.pop(approval.id)
        if claimed is not None:
            self._wake(approval.id)
            await self._changed_count()
        return claimed

    def _wake(self, approval_id: str) -> None:
        self._waiters.wake(approval_id)

    async def _changed_count(self) -> None:
        count = await self.pending_count()
        for observer in self.on_change:
            observer(count)

    async def _stored(self, approval_id: str) -> Approval:
        unsaved = self._unsaved.get(approval_id)
        if unsaved is not None:  # the row still says what it was before this process closed it
            return unsaved
        stored = await self.store.get_approval(approval_id)
        if stored is None:
            raise ApprovalNotFound(f"no approval {approval_id}")
        return stored

    def _persist_later(self, approval: Approval) -> None:
        # Used and cancelled are final in memory at once; the row follows (the audit log has it too).
        self._unsaved[approval.id] = approval
        self._in_background(self._persist(approval))

    def _in_background(self, work: Coroutine[object, object, None]) -> asyncio.Task[None]:
        """Run `work` on its own (close() waits for it)."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _persist(self, approval: Approval) -> None:
        try:
            await self.store.save_approval(approval)
        except Exception:
            log.exception("could not store approval %s (%s)", approval.id, approval.state.value)
        else:
            self._unsaved.pop(approval.id, None)
            self._wake(approval.id)  # waiters in other replicas read the row now

    def _record(self, approval: Approval, action: str, actor: str, detail: dict[str, Any] | None = None) -> None:
        self.audit.record(AuditEvent(
            kind="approval", action=action, actor=actor, agent_id=approval.agent_id, owner=approval.owner,
            task_id=approval.task_id, tool=approval.tool, decision_id=approval.decision_id,
            trace_id=approval.trace_id, args_digest=approval.args_digest,
            detail={"approval_id": approval.id, "state": approval.state.value,
                    "policy_version": approval.policy_version, **(detail or {})},
        ))


def ended(approval: Approval) -> str:
    """Why a closed request cannot be decided, for the person who tried."""
    why = f" ({approval.end_reason})" if approval.end_reason else ""
    return f"approval {approval.id} is already {approval.state.value}{why}"
