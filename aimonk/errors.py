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


def state_dict_mismatch(error: RuntimeError) -> str:
    """The first specific line of torch's `load_state_dict` error (after its summary), for a one-line message."""
    lines = str(error).splitlines()
    return lines[1].strip() if len(lines) > 1 else str(error)
