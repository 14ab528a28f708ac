"""aimonk: multi-label image attribute classification with missing (NA) labels.

Layers, each importing only those below it (checked by import-linter, see pyproject.toml):
cli > commands > evaluate > train > model > data > checkpoint, distributed, options > config > io > registry > errors.
"""

from aimonk.data.labels import LabelTable, read_labels
from aimonk.errors import AimonkError, CheckpointError, ImageReadError, LabelFileError, WeightsUnavailableError

__all__ = [
    "AimonkError",
    "CheckpointError",
    "ImageReadError",
    "LabelFileError",
    "LabelTable",
    "WeightsUnavailableError",
    "read_labels",
]
