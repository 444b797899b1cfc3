"""Demo upstream: a small in-memory ticket tracker, served over stdio.

Run it as a child process of the gateway (see ``tool_catalog/tickets.yaml``) or by hand:

    .venv/bin/python examples/demo_upstreams/tickets_server.py

Tools, by the risk tier the catalog gives them:
    read         list_tickets, get_ticket
    write        create_ticket, close_ticket
    destructive  delete_all_tickets
Resource ``tickets://summary`` and prompt ``triage(ticket_id)``.

State lives in this process only and starts from the same three seed tickets every time, so
outputs are deterministic (ids count up from T-1004).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

Priority = Literal["low", "medium", "high"]
Status = Literal["open", "closed"]


@dataclass
class Ticket:
    id: str
    title: str
    reporter_email: str
    priority: Priority
    status: Status = "open"
    resolution: str = ""


class TicketStore:
    """The tracker's state: tickets by id, in creation order."""

    def __init__(self) -> None:
        self.tickets: dict[str, Ticket] = {}
        self._next = 1001
        self.add("Login page returns 500", "alice@example.com", "high")
        self.add("Typo in invoice footer", "bob@example.com", "low")
        self.add("Export to CSV is slow", "carol@example.com", "medium")

    def add(self, title: str, reporter_email: str, priority: Priority) -> Ticket:
        ticket = Ticket(id=f"T-{self._next}", title=title, reporter_email=reporter_email, priority=priority)
        self._next += 1
        self.tickets[ticket.id] = ticket
        return ticket

    def get(self, ticket_id: str) -> Ticket:
        try:
            return self.tickets[ticket_id]
        except KeyError:
            raise ToolError(f"no ticket {ticket_id!r}") from None


store = TicketStore()
server = MCPServer("demo-tickets", version="1.0.0", instructions="A small in-memory ticket tracker.")

READ = ToolAnnotations(read_only_hint=True, idempotent_hint=True)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True)


@server.tool(annotations=READ)
def list_tickets(status: Status | None = None) -> list[dict[str, Any]]:
    """List tickets (id, title, priority, status), optionally only those with the given status."""
    return [
        {"id": t.id, "title": t.title, "priority": t.priority, "status": t.status}
        for t in store.tickets.values()
        if status is None or t.status == status
    ]


@server.tool(annotations=READ)
def get_ticket(ticket_id: str) -> dict[str, Any]:
    """Return one ticket in full, including the reporter's e-mail address."""
    return asdict(store.get(ticket_id))


@server.tool(annotations=WRITE)
def create_ticket(title: str, reporter_email: str, priority: Priority = "medium") -> dict[str, Any]:
    """Open a new ticket and return it."""
    return asdict(store.add(title, reporter_email, priority))


@server.tool(annotations=WRITE)
def close_ticket(ticket_id: str, resolution: str = "fixed") -> dict[str, Any]:
    """Close a ticket with a resolution note and return it."""
    ticket = store.get(ticket_id)
    ticket.status = "closed"
    ticket.resolution = resolution
    return asdict(ticket)


@server.tool(annotations=DESTRUCTIVE)
def delete_all_tickets(confirm: bool = False) -> dict[str, int]:
    """Delete every ticket. Does nothing unless confirm is true."""
    if not confirm:
        return {"deleted": 0}
    deleted = len(store.tickets)
    store.tickets.clear()
    return {"deleted": deleted}


@server.resource("tickets://summary", name="summary", mime_type="text/plain")
def summary() -> str:
    """Counts of open and closed tickets."""
    open_count = sum(1 for t in store.tickets.values() if t.status == "open")
    closed_count = len(store.tickets) - open_count
    return f"open: {open_count}\nclosed: {closed_count}\n"


@server.prompt(description="Ask the model to triage one ticket.")
def triage(ticket_id: str) -> str:
    """A triage request for one ticket."""
    ticket = store.get(ticket_id)
    return (
        f"Triage ticket {ticket.id} ({ticket.priority} priority): {ticket.title!r}. "
        "Suggest an owner team, a priority, and the next step."
    )


if __name__ == "__main__":
    server.run("stdio")
