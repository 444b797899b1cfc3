"""Demo upstream: a toy payments service, served over Streamable HTTP at ``/mcp``.

    .venv/bin/python examples/demo_upstreams/payments_server.py --port 9102
    .venv/bin/python examples/demo_upstreams/payments_server.py --port 0   # prints "LISTENING <port>"

``--exit-with-stdin`` (what `narrowgate demo` passes): stop when stdin, a pipe from the parent, closes,
so the server never outlives the process that started it, however that process ends.

Both protocol eras are served on the one endpoint (the SDK's StreamableHTTPSessionManager routes on
the ``MCP-Protocol-Version`` header): 2025-11-25 clients get a stateful session (``Mcp-Session-Id``),
2026-07-28 clients the stateless per-request path with ``server/discover``.

Tools, by the risk tier the catalog gives them:
    read        get_balance, list_payments
    privileged  refund_payment(amount), transfer_funds(amount)
Resource ``payments://accounts`` and prompt ``dispute_review(payment_id)``.

State lives in this process only and starts from the same seed every time; money is in integer
cents inside and decimal units at the edge, so outputs are deterministic.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from starlette.applications import Starlette


@dataclass
class Payment:
    id: str
    account: str
    payee: str
    amount_cents: int
    refunded_cents: int = 0

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "account": self.account,
            "payee": self.payee,
            "amount": self.amount_cents / 100,
            "refunded": self.refunded_cents / 100,
        }


class Ledger:
    """Balances in cents by account, and payments by id."""

    def __init__(self) -> None:
        self.balances: dict[str, int] = {"acct-ops": 1_250_000, "acct-payroll": 8_400_000}
        self.payments: dict[str, Payment] = {}
        self._next = 5001
        self.record("acct-ops", "Acme Hosting", 12_999)
        self.record("acct-ops", "Paper & Co", 4_550)
        self.record("acct-payroll", "Contractor J. Doe", 250_000)

    def record(self, account: str, payee: str, amount_cents: int) -> Payment:
        payment = Payment(id=f"P-{self._next}", account=account, payee=payee, amount_cents=amount_cents)
        self._next += 1
        self.payments[payment.id] = payment
        return payment

    def balance(self, account: str) -> int:
        if account not in self.balances:
            raise ToolError(f"no account {account!r}")
        return self.balances[account]

    def payment(self, payment_id: str) -> Payment:
        if payment_id not in self.payments:
            raise ToolError(f"no payment {payment_id!r}")
        return self.payments[payment_id]


def to_cents(amount: float) -> int:
    cents = round(amount * 100)
    if cents <= 0:
        raise ToolError("amount must be positive")
    return cents


ledger = Ledger()
server = MCPServer(
    "demo-payments", version="1.0.0", instructions="A toy payments service.", log_level="WARNING"
)

READ = ToolAnnotations(read_only_hint=True, idempotent_hint=True)
MOVES_MONEY = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=True)


@server.tool(annotations=READ)
def get_balance(account: str) -> dict[str, Any]:
    """Return an account's balance."""
    return {"account": account, "balance": ledger.balance(account) / 100, "currency": "EUR"}


@server.tool(annotations=READ)
def list_payments(account: str | None = None) -> list[dict[str, Any]]:
    """List payments, optionally only those of one account."""
    return [p.view() for p in ledger.payments.values() if account is None or p.account == account]


@server.tool(annotations=MOVES_MONEY)
def refund_payment(payment_id: str, amount: float, reason: str = "") -> dict[str, Any]:
    """Refund part or all of a payment back to its account; amount is in EUR."""
    payment = ledger.payment(payment_id)
    cents = to_cents(amount)
    if payment.refunded_cents + cents > payment.amount_cents:
        raise ToolError("refund exceeds the payment")
    payment.refunded_cents += cents
    ledger.balances[payment.account] += cents
    return {**payment.view(), "refund": cents / 100, "reason": reason}


@server.tool(annotations=MOVES_MONEY)
def transfer_funds(from_account: str, to_account: str, amount: float, memo: str = "") -> dict[str, Any]:
    """Move money between two accounts; amount is in EUR."""
    cents = to_cents(amount)
    if ledger.balance(from_account) < cents:
        raise ToolError("insufficient funds")
    ledger.balance(to_account)
    ledger.balances[from_account] -= cents
    ledger.balances[to_account] += cents
    payment = ledger.record(from_account, to_account, cents)
    return {**payment.view(), "memo": memo}


@server.resource("payments://accounts", name="accounts", mime_type="application/json")
def accounts() -> dict[str, float]:
    """Every account with its balance in EUR."""
    return {account: cents / 100 for account, cents in ledger.balances.items()}


@server.prompt(description="Ask the model to review a disputed payment.")
def dispute_review(payment_id: str) -> str:
    """A dispute review request for one payment."""
    p = ledger.payment(payment_id)
    return (
        f"Payment {p.id} of {p.amount_cents / 100:.2f} EUR from {p.account} to {p.payee!r} is disputed. "
        "Summarise the facts and recommend refund, partial refund, or no action."
    )


class AnnouncingServer(uvicorn.Server):
    """A uvicorn server that prints ``LISTENING <port>`` (flushed) once it accepts connections."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and sockets:
            print(f"LISTENING {sockets[0].getsockname()[1]}", flush=True)


def serve_http(app: Starlette, host: str, port: int) -> None:
    """Serve ``app`` on host:port (0 picks a free port) until SIGINT/SIGTERM."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    anyio.run(AnnouncingServer(config).serve, [sock])


def stop_when_stdin_closes() -> None:
    """Read stdin to its end (the parent closed the pipe or died), then stop as on SIGTERM."""

    def watch() -> None:
        while sys.stdin.buffer.read(4096):
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9102, help="0 picks a free port")
    parser.add_argument("--exit-with-stdin", action="store_true", help="stop when stdin reaches end-of-file")
    args = parser.parse_args(argv)
    if args.exit_with_stdin:
        stop_when_stdin_closes()
    app = server.streamable_http_app(host=args.host)
    serve_http(app, args.host, args.port)


if __name__ == "__main__":
    main(sys.argv[1:])
