"""The admin API (`/admin/v1/...`): its own authentication, never reachable with agent credentials."""
