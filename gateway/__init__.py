"""Narrowgate: a least-privilege gateway for AI agents' MCP tool calls."""

__version__ = "0.1.0"
