"""Errors that are the user's to fix: printed by the CLI as one clear message, no traceback."""


class L2SError(Exception):
    """Base class for every user-facing error of l2s_lib."""


class ConfigError(L2SError, ValueError):
    """A parameter file, method, hyper-parameter or option is invalid; the message lists what is allowed."""


class CheckpointError(L2SError):
    """A model cannot be opened, is of the wrong format, or two models are incompatible."""


class NonFiniteError(L2SError):
    """A NaN or Inf appeared in an input or output tensor (the message names the tensor)."""


class BenchmarkError(L2SError):
    """A benchmark is unknown or its data cannot be found."""
