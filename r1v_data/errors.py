"""One small error hierarchy. A message says what failed, why, and what to do.

The CLI prints `R1VError` messages on one line with no traceback; anything else is a bug and
keeps its traceback.
"""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type when it has none), for one-line errors."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


class R1VError(Exception):
    """Base of every error r1v raises on purpose."""


class ConfigError(R1VError):
    """A configuration value, flag or YAML file is wrong."""


class SourceError(R1VError):
    """An input source cannot be read at all (per-row problems go to the quarantine instead)."""


class StoreError(R1VError):
    """The store directory is missing, damaged or of an unsupported version."""


class StoreLockedError(StoreError):
    """Another process is writing to the store."""


class DamagedStoreError(StoreError):
    """A store's files are not what its catalog and parts say they are; `r1v-data doctor` helps."""


class SchemaError(R1VError):
    """Rows do not match a versioned schema, or a schema file is newer than this r1v."""


class QueryError(R1VError):
    """A user's SQL query or expression is malformed or fails."""


class MissingExtraError(R1VError):
    """An optional dependency is not installed."""

    def __init__(self, module: str, extra: str):
        super().__init__(
            f"{module} is not installed; install the '{extra}' extra: pip install 'r1v[{extra}]'"
        )


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a stage after it recorded its run as `interrupted`; `saved` says what it had
    written (the CLI prints it with how to resume). A KeyboardInterrupt still, so code that stops
    on Ctrl-C stops on it."""

    def __init__(self, saved: str):
        super().__init__(saved)
        self.saved = saved


class NetworkError(R1VError):
    """A service r1v needs (the Hugging Face Hub) cannot be reached."""
