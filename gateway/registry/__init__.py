"""The agent registry: who each agent is, who owns it, and whether it may act now."""
