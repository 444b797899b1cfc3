"""Agent-facing Streamable HTTP: parsing, sessions, streams, replies."""
