"""A checkpoint as an ONNX file for deployment, checked against PyTorch on real images before it is written.

The file holds the whole model (backbone and head) in fp32 and the checkpoint's decision rule: its output is the
calibrated probability sigmoid(logit / temperature) that `aimonk predict` prints, compared with each attribute's
threshold by the same rule. Input `images` (batch, 3, size, size), output `probabilities` (batch, attributes), the
batch axis dynamic. Its metadata (JSON strings) says everything inference needs: attribute names, thresholds,
temperatures (already applied), which attributes are decided at all, preprocessing, backbone and weights. onnx,
onnxscript (torch's exporter) and onnxruntime (the check) are the optional extra `aimonk[onnx]`, imported only here.

`quantize="int8"`: the checked fp32 graph quantised by onnxruntime's static quantisation (`quantize_static`),
calibrated on training images preprocessed as predict does; the head and the decision rule after it stay fp32.
`aimonk predict --model M.onnx` runs either (`aimonk.evaluate.onnx_inference`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aimonk.checkpoint import DecisionRule, recorded_data
from aimonk.data.images import ImageDataset, Preprocessing, image_files
from aimonk.errors import AimonkError
from aimonk.evaluate.onnx_inference import INPUT, METADATA_FORMAT, OUTPUT, session_of
from aimonk.evaluate.prediction import Predictor
from aimonk.io import atomic_file

FORMATS = ("onnx",)
QUANTIZATIONS = ("int8",)
TOLERANCE = 1e-4  # the largest |probability difference| from PyTorch fp32 that an export may show
CHECK_IMAGES = 32  # images the export is checked on, at most
CALIBRATION_IMAGES = 256  # training images int8 is calibrated on, at most
# How int8 quantises (benchmarks/int8.py measured the four on this project's ResNet18 and Lite0: docs/export.md)
INT8_FORMAT, INT8_PER_CHANNEL = "QDQ", True


@dataclass
class Export:
    """A written export and how closely it matches PyTorch on the images it was checked on."""

    path: Path
    checked: int  # images
    checked_on: str  # where they came from
    difference: float  # max |probability difference| from the fp32 PyTorch model
    predict_difference: float  # ... from `aimonk predict` (whose backbone may run in bf16)
    quantized: dict | None = None  # int8: how, on how many images, and how closely it follows the fp32 export


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
                 check_paths: Sequence[str | Path] | None = None, quantize: str | None = None,
                 calibration_paths: Sequence[str | Path] | None = None) -> Export:
    """Export the checkpoint at `model_path` (default output: the same path with the format's suffix, `.int8.onnx`
    quantised).

    The export is run by onnxruntime on up to CHECK_IMAGES real images (`check_paths`, files or folders, or by
    default the checkpoint's validation images, else its training images) and refused, nothing written, if any
    probability differs from PyTorch's fp32 model by more than TOLERANCE. With `quantize="int8"` that checked graph
    is quantised (`quantized_int8`), calibrated on `calibration_paths` (default: the checkpoint's training images).
    """
    check_format(format)
    if quantize not in (None, *QUANTIZATIONS):
        raise AimonkError(f"unknown quantisation {quantize!r}; choose one of {', '.join(QUANTIZATIONS)}")
    onnx = _onnx_packages()
    predictor = Predictor(model_path)
    suffix = f".{quantize}.{format}" if quantize else f".{format}"
    out = Path(out_path) if out_path else Path(model_path).with_suffix(suffix)
    images, checked_on = check_images(predictor, check_paths, model_path)
    calibration = calibration_images(predictor, calibration_paths, model_path) if quantize else None
    network = Probabilities(predictor.model, predictor.rule.temperatures).eval()
    with atomic_file(out) as file:  # an unwritable path fails here, before the export
        proto = _onnx_model(network, predictor.preprocessing.image_size, model_path)
        described = metadata(predictor.checkpoint)
        onnx.helper.set_model_props(proto, described)
        serialized = proto.SerializeToString()
        exported = session_of(serialized).run([OUTPUT], {INPUT: images.numpy()})[0]
        with torch.inference_mode():
            expected = network(images).numpy()
        difference = float(np.abs(exported - expected).max())
        if not difference <= TOLERANCE:  # NaN fails too
            raise AimonkError(f"{out}: not written: the ONNX model's probabilities differ from PyTorch's by up to "
                              f"{difference:.2g} on {len(images)} images of {checked_on} (the limit is {TOLERANCE:g})")
        quantized = None
        if calibration is not None:
            serialized = quantized_int8(serialized, calibration[0])
            int8 = session_of(serialized).run([OUTPUT], {INPUT: images.numpy()})[0]
            if not np.isfinite(int8).all():
                raise AimonkError(f"{out}: not written: the int8 model gives non-finite probabilities")
            rule = predictor.rule
            agree = [a == b for p, q in zip(exported, int8, strict=True)
                     for a, b, decided in zip(rule.decisions(p), rule.decisions(q), rule.learnable, strict=True)
                     if decided]
            quantized = {"type": quantize, "format": INT8_FORMAT, "per_channel": INT8_PER_CHANNEL,
                         "calibration_images": len(calibration[0]), "calibrated_on": calibration[1],
                         "difference": float(np.abs(int8 - exported).max()),
                         "agreement": float(np.mean(agree)) if agree else 1.0}
            proto = onnx.load_from_string(serialized)  # quantize_static keeps no metadata: written again
            onnx.helper.set_model_props(proto, {**described, "quantization": json.dumps(quantized)})
            serialized = proto.SerializeToString()
        file.write(serialized)
    predicted = predictor.probabilities(images).numpy()
    judged = ~np.isnan(predicted).any(axis=0)  # an attribute that cannot be judged has no probability to compare
    return Export(out, len(images), checked_on, difference,
                  float(np.abs(exported - predicted)[:, judged].max(initial=0.0)), quantized)


def quantized_int8(fp32: bytes, calibration: np.ndarray, quant_format: str = INT8_FORMAT,
                   per_channel: bool = INT8_PER_CHANNEL) -> bytes:
    """The fp32 export quantised to int8 by onnxruntime (`quantize_static`, MinMax calibration on `calibration`,
    preprocessed images): uint8 activations, int8 weights; the head (the last MatMul or Gemm) and what follows it
    (temperatures, sigmoid) stay fp32, so the probabilities keep their resolution near the thresholds."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Images(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(np.array_split(calibration, max(1, len(calibration) // 16)))

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT: batch}

    with tempfile.TemporaryDirectory() as work:
        source, prepared, quantized = (Path(work) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(fp32)
        quant_pre_process(str(source), str(prepared))  # shapes inferred and the graph optimised, as recommended
        model = onnx.load(str(prepared))
        nodes = model.graph.node
        for index, node in enumerate(nodes):
            node.name = node.name or f"node_{index}"
        onnx.save(model, str(prepared))
        head = max(index for index, node in enumerate(nodes) if node.op_type in ("MatMul", "Gemm"))
        quantize_static(str(prepared), str(quantized), Images(), quant_format=QuantFormat[quant_format],
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=[node.name for node in nodes[head:]])
        return quantized.read_bytes()


def metadata(checkpoint: dict) -> dict[str, str]:
    """What inference needs, each value a JSON string: the decision rule (names, thresholds, temperatures, which
    attributes are decided, why an attribute cannot be judged at all), preprocessing, input and output."""
    preprocessing = Preprocessing.from_dict(checkpoint["preprocessing"])  # a checkpoint made before a choice: default
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
        "input": f"{INPUT}: float32 (batch, 3, image_size, image_size), RGB made a square (resampled by "
                 "preprocessing's `interpolation`) as its `resize` says (squash: the whole picture stretched to "
                 "image_size x image_size; crop: the shorter side resized to int(image_size / crop_share), the "
                 "central square kept), scaled to [0, 1], then (x - mean) / std per channel",
        "preprocessing": {**preprocessing.as_dict(), "interpolation": preprocessing.interpolation,
                          "crop_share": preprocessing.crop_share},
        "backbone": checkpoint["backbone"],
        "weights_origin": checkpoint["weights_origin"],
    }
    values.update({} if rule.verdicts is None else {"verdicts": list(rule.verdicts)})
    values.update({} if rule.shortages is None else {"cannot_judge": list(rule.shortages)})  # why: no probability
    return {key: json.dumps(value) for key, value in values.items()}


def check_images(predictor: Predictor, paths: Sequence[str | Path] | None, model_path: str | Path = "."
                 ) -> tuple[torch.Tensor, str]:
    """Up to CHECK_IMAGES readable images, preprocessed as predict does, and a description of where they are (by
    default the checkpoint's validation images, in the folder it recorded)."""
    if paths:
        files, where = image_files(paths), ", ".join(map(str, paths))
    else:
        folder = _training_image_folder(predictor.checkpoint, model_path)
        names = predictor.checkpoint.get("val_files") or predictor.checkpoint.get("train_files") or []
        files, where = [folder / name for name in names if (folder / name).is_file()], f"{folder}"
    images = _readable(files, predictor.preprocessing, CHECK_IMAGES)
    if not len(images):
        raise AimonkError(f"no readable image in {where} to check the export on; give some with --check-images")
    return images, where


def calibration_images(predictor: Predictor, paths: Sequence[str | Path] | None, model_path: str | Path = "."
                       ) -> tuple[np.ndarray, str]:
    """Up to CALIBRATION_IMAGES readable images to calibrate int8 on, preprocessed as predict does (`paths`, or the
    checkpoint's training images, an even spread of them), and where they are."""
    if paths:
        files, where = image_files(paths), ", ".join(map(str, paths))
    else:
        folder = _training_image_folder(predictor.checkpoint, model_path)
        files = [folder / name for name in predictor.checkpoint.get("train_files") or [] if (folder / name).is_file()]
        where = f"the training images in {folder}"
    spread = [files[int(i)] for i in np.linspace(0, len(files) - 1, min(len(files), CALIBRATION_IMAGES))]
    images = _readable(spread, predictor.preprocessing, CALIBRATION_IMAGES)
    if not len(images):
        raise AimonkError(f"no readable image in {where} to calibrate int8 on; give some with --calibration-images")
    return images.numpy(), where


def _readable(files: Sequence[Path], preprocessing: Preprocessing, most: int) -> torch.Tensor:
    """Up to `most` of `files` that can be read, preprocessed (batch, 3, size, size; empty if none)."""
    dataset = ImageDataset.unlabelled(files, preprocessing)
    images = []
    for index in range(len(dataset)):
        item = dataset[index]
        if "image" in item:
            images.append(item["image"])
        if len(images) == most:
            break
    return torch.stack(images) if images else torch.empty(0)


def _training_image_folder(checkpoint: dict, model_path: str | Path) -> Path:
    """The folder of the checkpoint's training images: as it recorded it (found from any working folder), else as
    its training settings name it (a checkpoint from before the folder was recorded)."""
    from aimonk.config import TrainConfig

    recorded = recorded_data(checkpoint, model_path)[1]
    if recorded is not None:
        return recorded
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


def _onnx_packages() -> Any:
    try:
        import onnx
        import onnxruntime  # noqa: F401 - the check
        import onnxscript  # noqa: F401 - torch's exporter needs it
    except ImportError as error:
        raise AimonkError(f"ONNX export needs onnx, onnxscript and onnxruntime ({error.name} is missing): "
                          "pip install 'aimonk[onnx]'") from None
    return onnx
