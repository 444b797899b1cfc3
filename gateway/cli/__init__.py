"""The `narrowgate` command: `main.py` builds the parser from `parsers/` (one module per command group's
command line); the commands themselves are one module per group here, imported only when one runs.

serve, demo, agents, tasks, keys, approvals, catalog (with catalog_resources and catalog_discover),
policy, audit; `admin_client.py` is what the admin-API commands share. The CLI imports the rest of
the gateway; nothing outside this package imports it.
"""
