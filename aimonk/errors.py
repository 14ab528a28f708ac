"""Errors a user can act on. The CLI prints them as one line and exits 2."""


class AimonkError(Exception):
    """Base class for problems with the user's input (files, options, checkpoints)."""


class LabelFileError(AimonkError):
    """A labels file that cannot be read; the message names the file and line."""

    def __init__(self, path: object, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


class ImageReadError(AimonkError):
    """An image file that PIL cannot decode into a picture."""


class CheckpointError(AimonkError):
    """A checkpoint that is unsafe, corrupt, or does not match what was asked for."""


class WeightsUnavailableError(AimonkError):
    """Requested backbone weights that cannot be had on this machine."""
