"""The call path: the pipeline that drives one agent request through the stages, read top to bottom
in `pipeline.py`, and the MCP method table (`methods.py`) that decides which requests go through it."""
