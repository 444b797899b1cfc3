"""Upstream MCP servers: HTTP and stdio clients, the pool, and the aggregated directory."""
