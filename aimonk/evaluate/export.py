"""A checkpoint as an ONNX file for deployment, checked against PyTorch on real images before it is written.

The file holds the whole model (backbone and head) in fp32 and the checkpoint's decision rule: its output is the
calibrated probability sigmoid(logit / temperature) that `aimonk predict` prints, compared with each attribute's
threshold by the same rule. Input `images` (batch, 3, size, size), output `probabilities` (batch, attributes), the
batch axis dynamic. Its metadata (JSON strings) says everything inference needs: attribute names, thresholds,
temperatures (already applied), which attributes are decided at all, preprocessing, backbone and weights. onnx,
onnxscript (torch's exporter) and onnxruntime (the check) are the optional extra `aimonk[onnx]`, imported only here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from aimonk.checkpoint import DecisionRule, recorded_data
from aimonk.data.images import ImageDataset, image_files
from aimonk.errors import AimonkError
from aimonk.evaluate.prediction import Predictor
from aimonk.io import atomic_file

FORMATS = ("onnx",)
TOLERANCE = 1e-4  # the largest |probability difference| from PyTorch fp32 that an export may show
CHECK_IMAGES = 32  # images the export is checked on, at most
INPUT, OUTPUT = "images", "probabilities"
METADATA_FORMAT = "aimonk-onnx-v2"  # v2: the probabilities are calibrated (temperatures in the graph)


@dataclass
class Export:
    """A written export and how closely it matches PyTorch on the images it was checked on."""

    path: Path
    checked: int  # images
    checked_on: str  # where they came from
    difference: float  # max |probability difference| from the fp32 PyTorch model
    predict_difference: float  # ... from `aimonk predict` (whose backbone may run in bf16)


class Probabilities(nn.Module):
    """A trained AttributeClassifier with its decision rule's temperatures: images -> calibrated probabilities."""

    def __init__(self, model: nn.Module, temperatures: Sequence[float]):
        super().__init__()
        self.model = model
        self.register_buffer("temperatures", torch.tensor(list(temperatures), dtype=torch.float32))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(images) / self.temperatures)


def check_format(format: str) -> None:
    if format not in FORMATS:
        raise AimonkError(f"unknown export format {format!r}; formats: {', '.join(FORMATS)}")


def export_model(model_path: str | Path, out_path: str | Path | None = None, format: str = "onnx",
                 check_paths: Sequence[str | Path] | None = None) -> Export:
    """Export the checkpoint at `model_path` (default output: the same path with the format's suffix).

    The export is run by onnxruntime on up to CHECK_IMAGES real images (`check_paths`, files or folders, or by
    default the checkpoint's validation images, else its training images) and refused, nothing written, if any
    probability differs from PyTorch's fp32 model by more than TOLERANCE.
    """
    check_format(format)
    onnx, onnxruntime = _onnx_packages()
    predictor = Predictor(model_path)
    out = Path(out_path) if out_path else Path(model_path).with_suffix(f".{format}")
    images, checked_on = check_images(predictor, check_paths, model_path)
    network = Probabilities(predictor.model, predictor.rule.temperatures).eval()
    with atomic_file(out) as file:  # an unwritable path fails here, before the export
        proto = _onnx_model(network, predictor.preprocessing.image_size, model_path)
        onnx.helper.set_model_props(proto, metadata(predictor.checkpoint))
        serialized = proto.SerializeToString()
        session = onnxruntime.InferenceSession(serialized, providers=["CPUExecutionProvider"])
        exported = session.run([OUTPUT], {INPUT: images.numpy()})[0]
        with torch.inference_mode():
            expected = network(images).numpy()
        difference = float(np.abs(exported - expected).max())
        if not difference <= TOLERANCE:  # NaN fails too
            raise AimonkError(f"{out}: not written: the ONNX model's probabilities differ from PyTorch's by up to "
                              f"{difference:.2g} on {len(images)} images of {checked_on} (the limit is {TOLERANCE:g})")
        file.write(serialized)
    predicted = predictor.probabilities(images).numpy()
    return Export(out, len(images), checked_on, difference, float(np.abs(exported - predicted).max()))


def metadata(checkpoint: dict) -> dict[str, str]:
    """What inference needs, each value a JSON string: the decision rule (names, thresholds, temperatures, which
    attributes are decided), preprocessing, input and output."""
    resize = checkpoint["preprocessing"].get("resize", "squash")  # a checkpoint made before the choice: squashed
    rule = DecisionRule.of(checkpoint)
    values = {
        "format": METADATA_FORMAT,
        "attributes": list(rule.attributes),
        "thresholds": list(rule.thresholds),
        "temperatures": list(rule.temperatures),
        "decided": list(rule.learnable),
        "output": f"{OUTPUT}: float32 (batch, attributes), the calibrated probability sigmoid(logit / temperature) "
                  "of each attribute (the temperatures are applied in the graph); an attribute is present where "
                  "it is decided (`decided`: better than chance on the validation images) and its probability "
                  "reaches its threshold",
        "input": f"{INPUT}: float32 (batch, 3, image_size, image_size), RGB made a square (bilinear) as "
                 "preprocessing's `resize` says (squash: the whole picture stretched to image_size x image_size; "
                 "crop: the shorter side resized to int(image_size * 256 / 224), the central square kept), scaled to "
                 "[0, 1], then (x - mean) / std per channel",
        "preprocessing": {**checkpoint["preprocessing"], "resize": resize, "interpolation": "bilinear"},
        "backbone": checkpoint["backbone"],
        "weights_origin": checkpoint["weights_origin"],
    }
    values.update({} if rule.verdicts is None else {"verdicts": list(rule.verdicts)})
    return {key: json.dumps(value) for key, value in values.items()}


def check_images(predictor: Predictor, paths: Sequence[str | Path] | None, model_path: str | Path = "."
                 ) -> tuple[torch.Tensor, str]:
    """Up to CHECK_IMAGES readable images, preprocessed as predict does, and a description of where they are (by
    default the checkpoint's validation images, in the folder it recorded)."""
    if paths:
        files, where = image_files(paths), ", ".join(map(str, paths))
    else:
        folder = recorded_data(predictor.checkpoint, model_path)[1] or _training_image_folder(predictor.checkpoint)
        names = predictor.checkpoint.get("val_files") or predictor.checkpoint.get("train_files") or []
        files, where = [folder / name for name in names if (folder / name).is_file()], f"{folder}"
    dataset = ImageDataset.unlabelled(files, predictor.preprocessing)
    images = []
    for index in range(len(dataset)):
        item = dataset[index]
        if "image" in item:
            images.append(item["image"])
        if len(images) == CHECK_IMAGES:
            break
    if not images:
        raise AimonkError(f"no readable image in {where} to check the export on; give some with --check-images")
    return torch.stack(images), where


def _training_image_folder(checkpoint: dict) -> Path:
    from aimonk.config import TrainConfig

    known = {spec.name for spec in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in (checkpoint.get("train_config") or {}).items() if k in known}).images_path


def _onnx_model(network: nn.Module, image_size: int, model_path: str | Path):  # noqa: ANN202 - an onnx.ModelProto
    example = torch.zeros(2, 3, image_size, image_size)  # a batch of 2: a batch of 1 would be fixed in the graph
    try:
        program = torch.onnx.export(network, (example,), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    except Exception as error:  # noqa: BLE001 - the exporter raises many types; none is the user's input
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise AimonkError(f"{model_path}: torch could not export the model to ONNX ({type(error).__name__}: "
                          f"{first_line})") from None
    return program.model_proto


def _onnx_packages() -> tuple:
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401 - torch's exporter needs it
    except ImportError as error:
        raise AimonkError(f"ONNX export needs onnx, onnxscript and onnxruntime ({error.name} is missing): "
                          "pip install 'aimonk[onnx]'") from None
    return onnx, onnxruntime
