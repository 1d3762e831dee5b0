"""Errors a user can act on: the CLI prints their message without a traceback."""


class ConfigError(ValueError):
    """A config value, file or folder is wrong; the message names the key or path and says how to fix it."""
