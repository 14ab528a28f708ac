"""aimonk: multi-label image attribute classification with missing (NA) labels."""

from aimonk.errors import AimonkError, CheckpointError, ImageReadError, LabelFileError, WeightsUnavailableError
from aimonk.labels import LabelTable, read_labels
from aimonk.losses import masked_bce_with_logits

__all__ = [
    "AimonkError",
    "CheckpointError",
    "ImageReadError",
    "LabelFileError",
    "LabelTable",
    "WeightsUnavailableError",
    "masked_bce_with_logits",
    "read_labels",
]
