"""Errors that reach the user: each names the file, key or checkpoint at fault and what is wrong."""


class BalvitError(Exception):
    """Base class: the CLI prints these as one clean line (no traceback) and exits with status 2."""


class ConfigError(BalvitError):
    """A config file or override is wrong (unknown key, wrong type, bad value)."""


class DataError(BalvitError):
    """A dataset file is missing, truncated, corrupt or inconsistent with its neighbours."""


class CheckpointError(BalvitError):
    """A checkpoint is missing, unreadable or belongs to another model or backbone."""
