"""`narrowgate catalog`: the command line; validate, review, approve, reject and pin are in gateway.cli.catalog,
the resource queue in gateway.cli.catalog_resources, discover in gateway.cli.catalog_discover."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.catalog.model import RISK_TIERS
from gateway.cli.parsers import Run, Subcommands, add_connection_options
from gateway.discovery.model import STATUSES

DEFAULT_DISCOVER_TIMEOUT_S = 30.0
OWNER_TODO = "TODO"  # what a discovered draft says the owner is until someone fills it in


def add_catalog_parser(commands: Subcommands) -> None:
    catalog = commands.add_parser("catalog", help="work with the tool catalog")
    catalog_commands = catalog.add_subparsers(title="catalog commands", metavar="COMMAND", required=True)
    validate = catalog_commands.add_parser("validate", help="check every manifest; report problems with file:line")
    validate.add_argument("--config", type=Path, help="take the catalog directory from this config")
    validate.add_argument("--catalog", type=Path, help="catalog directory (default: tool_catalog/)")
    validate.set_defaults(run=Run("gateway.cli.catalog:run_catalog_validate"))
    add_catalog_review_parsers(catalog_commands)


def add_catalog_review_parsers(catalog_commands: Subcommands) -> None:
    """`review`, `approve`, `reject`, `pin` and `discover` under `narrowgate catalog`."""
    review = catalog_commands.add_parser(
        "review", help="the quarantine queue, or one tool's review record (admin API)",
        description="Without SERVER/NAME: the tools in one status (default quarantined) as a table. With it: "
                    "the tool's record, its flags, what changed against the last approved definition, and the "
                    "definition itself. An approver or admin token works.")
    review.add_argument("tool", nargs="?", metavar="SERVER/NAME", help="one tool, e.g. docs/fetch_page")
    review.add_argument("--status", choices=[*STATUSES, "all"], help="which tools to list (default: quarantined)")
    review.add_argument("--resources", action="store_true",
                        help="the resource and resource-template queue instead of the tool queue")
    _add_resource_option(review)
    add_connection_options(review)
    review.set_defaults(run=Run("gateway.cli.catalog:run_review"))

    approve = catalog_commands.add_parser("approve", help="approve a quarantined tool's, resource's or "
                                                          "template's definition (admin API)")
    approve.add_argument("tool", nargs="?", metavar="SERVER/NAME")
    _add_resource_option(approve)
    _add_hash_option(approve)
    approve.add_argument("--risk", choices=RISK_TIERS, help="risk tier of a discovered tool (required for one)")
    approve.add_argument("--data-class", action="append", dest="data_classes", metavar="CLASS",
                         help="a data class of a discovered tool (repeatable)")
    approve.add_argument("--egress", action="store_true", help="a discovered tool sends data outside")
    approve.add_argument("--comment", default="", help="a note recorded with your decision")
    add_connection_options(approve)
    approve.set_defaults(run=Run("gateway.cli.catalog:run_decide"), action="approve")

    reject = catalog_commands.add_parser("reject", help="reject a quarantined tool's, resource's or "
                                                        "template's definition (admin API)")
    reject.add_argument("tool", nargs="?", metavar="SERVER/NAME")
    _add_resource_option(reject)
    _add_hash_option(reject)
    reject.add_argument("--comment", default="", help="a note recorded with your decision")
    add_connection_options(reject)
    reject.set_defaults(run=Run("gateway.cli.catalog:run_decide"), action="reject")

    pin = catalog_commands.add_parser(
        "pin", help="write the approved definitions' hashes into the manifests (definition_sha256)",
        description="Read the approved definitions' hashes from the running gateway and write each as the "
                    "tool's definition_sha256 in the manifest with that server's id, keeping comments and "
                    "layout. Quarantined and rejected tools are not pinned.")
    pin.add_argument("--catalog", type=Path, default=Path("tool_catalog"),
                     help="catalog directory (default: tool_catalog/)")
    pin.add_argument("--check", action="store_true",
                     help="write nothing; exit 1 if a pin is missing or differs from the approved hash")
    add_connection_options(pin)
    pin.set_defaults(run=Run("gateway.cli.catalog:run_pin"))
    add_discover_parser(catalog_commands)


def _add_resource_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resource", metavar="ID", help="a resource or template by its review id (res_...), "
                                                          "as `narrowgate catalog review --resources` lists it")


def _add_hash_option(parser: argparse.ArgumentParser) -> None:
    # Checked in run_decide, not by argparse, so a missing hash comes with how to get it.
    parser.add_argument("--sha256", metavar="HASH",
                        help="required: the definition hash you reviewed, as shown by "
                             "`narrowgate catalog review SERVER/NAME`")
def add_discover_parser(catalog_commands: Subcommands) -> None:
    discover = catalog_commands.add_parser(
        "discover", help="connect to a live MCP server and draft its manifest (tools, risk, pins)",
        usage="narrowgate catalog discover [options] URL\n"
              "       narrowgate catalog discover [options] -- COMMAND [ARG ...]",
        description="List a running MCP server's tools, prompts and resources and write a draft manifest: "
                    "every tool with its description, the risk tier its annotations claim, data classes to "
                    "fill and its definition_sha256 pin. Trim it, fill the TODOs, then validate.",
        epilog="examples:\n  narrowgate catalog discover http://127.0.0.1:9000/mcp --owner me@example.com\n"
               "  narrowgate catalog discover --id files -o tool_catalog/files.yaml -- npx -y "
               "@modelcontextprotocol/server-filesystem /srv/share",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    discover.add_argument("target", nargs="+", metavar="TARGET",
                          help="the server's Streamable HTTP URL, or (after --) the command that starts it on stdio")
    discover.add_argument("--id", dest="server_id", metavar="ID",
                          help="the manifest's id (default: from the server's name)")
    discover.add_argument("--namespace", help="prefix of exposed names (default: the id; \"\" for bare names)")
    discover.add_argument("--owner", help=f"who answers for the upstream (default: {OWNER_TODO}, to fill)")
    discover.add_argument("-o", "--output", type=Path, help="write the draft to this file (default: stdout)")
    discover.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    discover.add_argument("--timeout", type=float, default=DEFAULT_DISCOVER_TIMEOUT_S, metavar="SECONDS",
                          help=f"give up on the server after this long (default {DEFAULT_DISCOVER_TIMEOUT_S:g})")
    discover.set_defaults(run=Run("gateway.cli.catalog_discover:run_discover"))
