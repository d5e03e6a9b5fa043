"""Errors the SFU reports to the signaling layer, each with a protocol error code."""


class SfuError(Exception):
    """A refusal with a machine-readable code (see docs/signaling.md) and a human message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
