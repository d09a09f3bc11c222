"""The errors lit_linear raises for things a user can fix: a bad option, bad data, a failed sweep.

The CLI prints them as one ``error: ...`` line and exits non-zero; anything else keeps its traceback.
"""


class LitLinearError(Exception):
    """Base class: a problem the user can fix, explained by its message."""


class ConfigError(LitLinearError, ValueError):
    """An option has an invalid value. The message names the option and what would be valid."""


class DataError(LitLinearError):
    """A data file or folder is missing or malformed. The message names the file and the fault."""


class SweepDivergedError(LitLinearError):
    """Every config of the sweep diverged, so there is no model to keep."""
