"""The approver web console at `/console`: pages.py (the Console), links.py (where things live), and
the sessions, security, catalog and view helpers behind them. See docs/console.md."""
