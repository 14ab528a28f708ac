"""aimonk: multi-label image attribute classification with missing (NA) labels.

Layers, each importing only those below it (checked by import-linter, see pyproject.toml): cli > commands > simulation >
labelling | cache | distributed | tracking > evaluate > train > card > model > metrics | checkpoint > data > config >
world | io > registry > errors.

The core (train, model, data, metrics, card, checkpoint and the floors below; evaluate but its explorer, export and
onnx_inference) never imports an extra: the feature cache (`cache`), torchrun (`distributed`), the labels workflow
(`labelling`), TensorBoard (`tracking`), the threshold explorer, the ONNX export and onnxruntime inference sit behind
their seams, and `simulation` serves notebook 05 and the benchmarks alone.
"""

from aimonk.errors import AimonkError, CheckpointError, ImageReadError, LabelFileError, WeightsUnavailableError

__all__ = [
    "AimonkError",
    "CheckpointError",
    "ImageReadError",
    "LabelFileError",
    "LabelFormat",
    "LabelTable",
    "WeightsUnavailableError",
    "read_labels",
]


def __getattr__(name: str) -> object:
    # The labels' reader loads numpy: imported when first asked for, so that `aimonk` itself imports nothing heavy
    # (the command line handles interrupts before anything slow is imported).
    if name in ("LabelFormat", "LabelTable", "read_labels"):
        from aimonk.data import labels

        return getattr(labels, name)
    raise AttributeError(f"module 'aimonk' has no attribute {name!r}")
