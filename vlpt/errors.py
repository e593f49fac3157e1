"""Error types raised for bad user input. Every message names the file, key or value at fault."""


class VlptError(Exception):
    """Base class of all errors vlpt raises for bad input or configuration."""


class ConfigError(VlptError):
    """A suite, method config or command-line value is invalid."""


class DatasetError(VlptError):
    """A dataset folder, split file or image is missing, corrupt or inconsistent."""


class CheckpointError(VlptError):
    """A checkpoint file is missing or does not fit the architecture it is loaded into."""
