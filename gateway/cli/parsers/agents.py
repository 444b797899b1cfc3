"""`narrowgate agents`: the command line; the commands are in gateway.cli.agents."""

from __future__ import annotations

from gateway.cli.parsers import Run, Subcommands, add_connection_options


def add_agents_parser(commands: Subcommands) -> None:
    agents = commands.add_parser("agents", help="manage agent records on a running gateway (admin API)")
    add_connection_options(agents)
    sub = agents.add_subparsers(title="agents commands", metavar="COMMAND", required=True)

    add = sub.add_parser("add", help="register an agent")
    add.add_argument("agent_id")
    add.add_argument("--owner", required=True, help="the person or team answerable for the agent")
    add.add_argument("--purpose", required=True, help="what the agent is for (free text)")
    add.add_argument("--name", help="display name (default: the id)")
    add.add_argument("--oidc", nargs=2, action="append", default=[], metavar=("ISSUER", "SUBJECT"),
                     help="bind an OIDC identity (repeatable)")
    add.add_argument("--spiffe-id", action="append", default=[], help="bind a SPIFFE ID (repeatable)")
    add.add_argument("--static", action="store_true", help="bind the development static-token identity")
    add.add_argument("--client", nargs=2, action="append", default=[], metavar=("ISSUER", "CLIENT_ID"),
                     help="bind a person's MCP client of an external authorization server (repeatable); "
                          "needs --person-group, --person-subject or --person-email-domain")
    add.add_argument("--person-group", action="append", default=[], metavar="GROUP",
                     help="people in this group may act through the --client identities (repeatable)")
    add.add_argument("--person-subject", action="append", default=[], metavar="SUB",
                     help="this person (their sub) may act through the --client identities (repeatable)")
    add.add_argument("--person-email-domain", action="append", default=[], metavar="DOMAIN",
                     help="people with a verified email in this domain may act through them (repeatable)")
    add.add_argument("--shared-client", action="store_true",
                     help="the --client identities are one process acting for many people (a team bot): chain "
                          "monitoring keeps their signals agent-wide")
    add.add_argument("--claim", action="append", default=[], metavar="NAME=VALUE",
                     help="pin a claim on every identity given here (e.g. repository_id=123)")
    add.add_argument("--tool", action="append", default=[], help="entitle a tool (exposed name; repeatable)")
    add.add_argument("--server", action="append", default=[], help="entitle every tool of a server")
    add.add_argument("--group", action="append", default=[])
    add.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    add.add_argument("--expires", help="expiry, ISO-8601 (e.g. 2027-01-31T00:00:00Z)")
    add.add_argument("--activate", action="store_true", help="start active instead of pending")
    add.add_argument("--no-require-task", action="store_true",
                     help="let a bare workload token call within the entitlement (default: a task token is required)")
    add.add_argument("--reason", default="registered with the CLI")
    add.set_defaults(run=Run("gateway.cli.agents:run_add"))

    listing = sub.add_parser("list", help="list agents")
    listing.set_defaults(run=Run("gateway.cli.agents:run_list"))
    show = sub.add_parser("show", help="show one agent and its lifecycle history")
    show.add_argument("agent_id")
    show.set_defaults(run=Run("gateway.cli.agents:run_show"))
    for action, text in (("activate", "approve a pending agent"), ("suspend", "suspend an agent at once"),
                         ("resume", "resume a suspended agent"), ("retire", "retire an agent (final)")):
        command = sub.add_parser(action, help=text)
        command.add_argument("agent_id")
        command.add_argument("--reason", required=True, help="why (recorded with your identity)")
        command.set_defaults(run=Run("gateway.cli.agents:run_lifecycle"), action=action)
