"""User-facing errors: one class so the CLI can print a one-line message instead of a traceback."""


class AtlasError(Exception):
    """An error caused by input the user controls (config, names, questions); printed as one line."""


class ConfigError(AtlasError):
    """A pool config that cannot be read or validated; the message names the file and the field."""


class UnknownNameError(AtlasError):
    """A model or tool name that is not in the pool."""


class BackendError(AtlasError):
    """A model endpoint or local model that failed after its retries; the message says why."""
