"""The Maskwatch error tree.

Every error raised on purpose by Maskwatch derives from :class:`MaskwatchError`;
most also derive from a builtin so callers may catch either (as gpiozero does).
"""

from __future__ import annotations


class MaskwatchError(Exception):
    """Root of every Maskwatch error."""


class ConfigError(MaskwatchError, ValueError):
    """A configuration file, variable or option is invalid; the message names the key."""


class ContractError(MaskwatchError, ValueError):
    """A topic or payload does not follow the MQTT contract.

    ``field`` names the offending field (dotted path) or is ``None`` for the
    whole payload; ``reason`` is a short machine-friendly category used for
    counting rejections (``json``, ``schema``, ``version``, ``oversize``,
    ``topic``).
    """

    def __init__(self, message: str, *, field: str | None = None, reason: str = "schema") -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason


class HardwareError(MaskwatchError, RuntimeError):
    """A camera, servo or other device could not be opened or driven."""


class ModelError(MaskwatchError, RuntimeError):
    """A model file is missing, corrupt or of the wrong kind."""


class MissingExtraError(MaskwatchError, ImportError):
    """An optional dependency group (``maskwatch[edge]`` etc.) is not installed."""

    def __init__(self, extra: str, module: str) -> None:
        super().__init__(
            f"this command needs the '{extra}' extra ({module} is missing): pip install 'maskwatch[{extra}]'"
        )
        self.extra = extra


class CommandRejected(MaskwatchError, ValueError):
    """A well-formed command that a node cannot carry out; the message is the answer's ``error``."""


class ImageReadError(MaskwatchError, ValueError):
    """An image file is missing, empty, corrupt or of an unsupported kind."""


class SnapshotError(MaskwatchError, ValueError):
    """An image could not be encoded within the size cap."""


class OutboxError(MaskwatchError, RuntimeError):
    """The edge's outbox file cannot be opened or is not an outbox."""


class DatasetError(MaskwatchError, ValueError):
    """A data folder is missing, empty or laid out wrongly; the message says what was expected."""


class StorageError(MaskwatchError, RuntimeError):
    """A batch could not be stored (database or snapshot folder); nothing of it was committed."""


class BatchFailed(MaskwatchError, RuntimeError):
    """The writer failed on a batch for a reason other than storage (a bug); nothing of it was stored."""
