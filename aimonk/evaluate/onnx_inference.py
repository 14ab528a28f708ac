"""An ONNX export (fp32, or int8 from `aimonk export --quantize int8`) predicting as `aimonk predict --model M.pth`
does: the preprocessing and decision rule written in its metadata, the same output. onnxruntime (the extra
`aimonk[onnx]`) is imported only here, when `aimonk predict --model M.onnx` asks for it.

As `aimonk predict` runs its backbone: with at least one worker per thread, each (single-threaded) worker decodes
and runs its own batches; otherwise the workers decode and this process runs the model on every thread.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from aimonk.checkpoint import DecisionRule
from aimonk.data.images import ImageDataset, Preprocessing, collate_readable
from aimonk.errors import AimonkError
from aimonk.evaluate.prediction import Decider, Prediction

INPUT, OUTPUT = "images", "probabilities"
METADATA_FORMAT = "aimonk-onnx-v2"  # v2: the probabilities are calibrated (temperatures in the graph)


def onnxruntime_package() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise AimonkError("an ONNX model needs onnxruntime: pip install 'aimonk[onnx]'") from None
    return onnxruntime


def session_of(model: str | Path | bytes, threads: int = 0) -> Any:
    """An onnxruntime CPU session (`threads` 0: as many as onnxruntime chooses)."""
    onnxruntime = onnxruntime_package()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    model = model if isinstance(model, bytes) else str(model)
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def rule_of(metadata: dict[str, Any]) -> DecisionRule:
    """The decision rule an export's metadata (decoded from JSON) holds: the checkpoint's, as exported."""
    verdicts, shortages = metadata.get("verdicts"), metadata.get("cannot_judge")
    return DecisionRule(tuple(metadata["attributes"]), tuple(map(float, metadata["thresholds"])),
                        tuple(map(float, metadata["temperatures"])), tuple(map(bool, metadata["decided"])),
                        None if verdicts is None else tuple(verdicts), None if shortages is None else tuple(shortages))


class OnnxRunner:
    """Images -> calibrated probabilities by an ONNX file; also a DataLoader `collate_fn`. Its session is made where
    it is first used, so that a worker process makes its own (never one forked from a parent that ran threads)."""

    def __init__(self, path: Path, threads: int = 0):
        self.path, self.threads, self._session = path, threads, None

    def __call__(self, items: list[dict]) -> dict:
        return self.run(collate_readable(items))

    def run(self, batch: dict) -> dict:
        """A `collate_readable` batch with "probabilities" (float32 numpy) in place of "image"."""
        images = batch.pop("image")
        batch["probabilities"] = None if images is None else self.probabilities(images.numpy())
        return batch

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        if self._session is None:
            self._session = session_of(self.path, self.threads)
        return self._session.run([OUTPUT], {INPUT: images})[0]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_session": None}


class OnnxPredictor(Decider):
    """An aimonk ONNX export ready for inference, with the decision rule and preprocessing of its metadata."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise AimonkError(f"{self.path}: model file not found")
        try:
            session = session_of(self.path)
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own types for a file it cannot load
            first_line = (str(error).strip().splitlines() or [""])[0]
            raise AimonkError(f"{self.path}: onnxruntime cannot load it ({type(error).__name__}: {first_line})") \
                from None
        raw = session.get_modelmeta().custom_metadata_map
        if raw.get("format") != json.dumps(METADATA_FORMAT):
            raise AimonkError(f"{self.path}: not an aimonk ONNX export of format {METADATA_FORMAT} (export it again "
                              "with aimonk export)")
        self.metadata = {key: json.loads(value) for key, value in raw.items()}
        self.rule = rule_of(self.metadata)
        self.attributes = list(self.rule.attributes)
        self.preprocessing = Preprocessing.from_dict(self.metadata["preprocessing"])
        self.runner = OnnxRunner(self.path)  # its own session, made when first used: none is forked to workers

    def predict(self, paths: Sequence[Path], batch_size: int = 32, num_workers: int = 2) -> Iterator[Prediction]:
        """Predictions in the order of `paths`; unreadable files give a Prediction with `error` set."""
        paths = [Path(path) for path in paths]
        dataset = ImageDataset.unlabelled(paths, self.preprocessing)
        workers = num_workers if len(paths) > batch_size else 0  # a worker costs more than it saves for a few images
        in_workers = workers >= torch.get_num_threads()
        runner = OnnxRunner(self.path, threads=1) if in_workers else self.runner
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                            collate_fn=runner if in_workers else collate_readable)
        for batch in loader:
            batch = batch if in_workers else runner.run(batch)
            results = {index: Prediction(paths[index], error=message) for index, message in batch["errors"]}
            if batch["probabilities"] is not None:
                rows = self.rule.judged(batch["probabilities"]).tolist()
                for index, row in zip(batch["index"].tolist(), rows, strict=True):
                    results[index] = Prediction(paths[index], probabilities=row)
            yield from (results[index] for index in sorted(results))
