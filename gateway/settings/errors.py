"""The one error a configuration problem raises, whichever section it is in."""


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""
