"""The demo's state directory: its store, tokens and development signing key, kept across restarts.

Everything in it is owner-only (directory 0700, secret files 0600): the store holds the gateway's
token signing keys, `tokens.json` the demo's bearer tokens, `workload-key.pem` the key that signs
the demo's workload identity tokens. Delete the directory to start over with new ones.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = REPO_ROOT / ".narrowgate" / "demo"
STORE_FILE = "state.db"
TOKENS_FILE = "tokens.json"
RUN_FILE = "demo.json"  # where the demo last listened, for `narrowgate demo token`


class DemoStateError(Exception):
    """The state directory cannot be used; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class DemoTokens:
    agent: str  # demo-agent's development static token
    approver: str  # the demo agent's owner, who approves its held calls in the console
    admin: str  # the whole admin API: `narrowgate agents|tasks|catalog|approvals|keys`

    @classmethod
    def new(cls) -> DemoTokens:
        return cls(*(secrets.token_urlsafe(24) for _ in range(3)))


class DemoState:
    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()

    @classmethod
    def open(cls, directory: Path) -> DemoState:
        """The directory, created owner-only if missing (and made owner-only if it was not)."""
        state = cls(directory)
        state.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(state.directory, 0o700)
        return state

    @property
    def store_url(self) -> str:
        return f"sqlite:///{self.directory / STORE_FILE}"

    def tokens(self) -> DemoTokens:
        """The tokens kept from an earlier run, or new ones written now."""
        path = self.directory / TOKENS_FILE
        if not path.exists():
            tokens = DemoTokens.new()
            write_private(path, json.dumps(asdict(tokens), indent=2).encode())
            return tokens
        raw = read_private_json(path)
        try:
            return DemoTokens(**{name: str(raw[name]) for name in ("agent", "approver", "admin")})
        except (KeyError, TypeError):
            raise DemoStateError(f"{path} is not a demo tokens file; delete it to make new tokens") from None

    def record_url(self, url: str) -> None:
        write_private(self.directory / RUN_FILE, json.dumps({"url": url}).encode())

    def recorded_url(self) -> str | None:
        path = self.directory / RUN_FILE
        if not path.exists():
            return None
        url = read_private_json(path).get("url")
        return url if isinstance(url, str) else None


def write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only, atomically (a reader sees the old or the new one)."""
    scratch = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(fd, "wb") as handle:
            handle.write(data)
        os.replace(scratch, path)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise


def read_private(path: Path) -> bytes:
    """A secret file's bytes; a copy others could read is made owner-only first."""
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        os.chmod(path, 0o600)
    return path.read_bytes()


def read_private_json(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(read_private(path))
    except ValueError:
        raise DemoStateError(f"{path} is not valid JSON; delete it to start over") from None
    if not isinstance(loaded, dict):
        raise DemoStateError(f"{path} does not hold a JSON object; delete it to start over")
    return loaded
