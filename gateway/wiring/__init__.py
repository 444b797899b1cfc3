"""What `gateway/app.py` connects: the gateway's reactions to its own events, one module each.

background: work started from an event and awaited at stop. catalog_sync: upstream listings
reconciled with reviews, and the policy engine and task grants kept on the catalog as reviewed.
list_changes: telling agents their lists may have changed. lifecycle: reactions to agents' and
tasks' lifecycle changes. endpoints: the small HTTP endpoints (health, metrics, metadata, keys).
"""
