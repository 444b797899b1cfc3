"""`narrowgate tasks`: the command line; the commands are in gateway.cli.tasks."""

from __future__ import annotations

from gateway.cli.parsers import Run, Subcommands, add_connection_options


def add_tasks_parser(commands: Subcommands) -> None:
    tasks = commands.add_parser("tasks", help="start and end agents' tasks on a running gateway (admin API)")
    add_connection_options(tasks)
    sub = tasks.add_subparsers(title="tasks commands", metavar="COMMAND", required=True)

    start = sub.add_parser("start", help="start a task for an agent and print its task token",
                           description="Start a task for AGENT. Prints the task id, its deadline, and the "
                                       "task token alone on the last line (hand it to the agent).")
    start.add_argument("agent_id", metavar="AGENT")
    start.add_argument("--purpose", required=True, help="what the task is for (recorded)")
    start.add_argument("--tool", action="append", required=True, dest="tools",
                       help="a tool the task needs (exposed name; repeatable)")
    start.add_argument("--deadline", type=float, metavar="SECONDS",
                       help="seconds from now until the task expires (default: the gateway's, 1 hour)")
    start.add_argument("--budget", type=int, metavar="N", help="most tool calls the task may make")
    start.add_argument("--trim", action="store_true",
                       help="grant the entitled part of --tool instead of refusing the whole request")
    start.set_defaults(run=Run("gateway.cli.tasks:run_task_start"))

    listing = sub.add_parser("list", help="list tasks")
    listing.add_argument("--agent", help="only this agent's tasks")
    listing.add_argument("--state", choices=["active", "completed", "failed", "expired", "revoked"])
    listing.set_defaults(run=Run("gateway.cli.tasks:run_task_list"))

    show = sub.add_parser("show", help="show one task and its history")
    show.add_argument("task_id", metavar="ID")
    show.set_defaults(run=Run("gateway.cli.tasks:run_task_show"))

    for action, text in (("complete", "mark a task done; its grants end at once"),
                         ("fail", "mark a task failed; its grants end at once"),
                         ("revoke", "revoke a task; its grants end at once")):
        command = sub.add_parser(action, help=text)
        command.add_argument("task_id", metavar="ID")
        command.add_argument("--reason", required=True, help="why (recorded with your identity)")
        command.set_defaults(run=Run("gateway.cli.tasks:run_task_end"), action=action)
