"""The protocol layer: JSON-RPC messages and error codes, SSE framing, the two MCP eras and capabilities.

Shared by `gateway.transport` (the agents' side) and `gateway.upstream` (the servers' side), which never
import each other. A leaf: it imports no other gateway package.
"""
