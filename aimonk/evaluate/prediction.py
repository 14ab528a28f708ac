"""`Predictor`: a checkpoint on new image files, streamed in batches, the frozen backbone run in the DataLoader
workers (`aimonk predict`). Its logits are those of training's validation scores and of `score_checkpoint`
(`aimonk.evaluate.scoring`): the head (and any fine-tuned stages) on the frozen stages' output; its probabilities
and decisions are the checkpoint's decision rule applied to them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aimonk import world
from aimonk.checkpoint import DecisionRule, load_checkpoint
from aimonk.data.images import ImageDataset, Preprocessing
from aimonk.model.classifier import AttributeClassifier, TrainedPart, model_from_checkpoint
from aimonk.model.features import BackboneRunner, backbone_batches, inference_backbone


@dataclass
class Prediction:
    """One image's result: probabilities per attribute, or the reason it could not be read."""

    path: Path
    probabilities: list[float] | None = None
    error: str | None = None


class Decider:
    """What `aimonk predict` prints, from probabilities and a decision rule (each attribute's name, temperature,
    threshold and whether the model can tell it at all): shared by a checkpoint and its ONNX export."""

    rule: DecisionRule
    attributes: list[str]

    @property
    def cannot_judge(self) -> list[str]:
        return self.rule.cannot_judge

    @property
    def thresholds(self) -> list[float]:
        return list(self.rule.thresholds)

    def decisions(self, probabilities: Sequence[float]) -> list[bool | None]:
        return self.rule.decisions(probabilities)

    def present_attributes(self, probabilities: Sequence[float]) -> list[str]:
        return self.rule.present(probabilities)

    def csv_header(self) -> list[str]:
        """`image`, `p_<attribute>` (probability) and `<attribute>` (decision) for each attribute, `error`."""
        return ["image", *(f"p_{name}" for name in self.attributes), *self.attributes, "error"]

    def csv_row(self, prediction: Prediction) -> list[str]:
        """One image: probabilities to 6 decimals (empty for an attribute that has none), decisions 1/0 (empty where
        none is made), or the error alone."""
        empty = [""] * len(self.attributes)
        if prediction.error:
            return [str(prediction.path), *empty, *empty, prediction.error]
        decisions = self.rule.decisions(prediction.probabilities)
        return [str(prediction.path), *("" if math.isnan(p) else f"{p:.6f}" for p in prediction.probabilities),
                *("" if present is None else str(int(present)) for present in decisions), ""]

    def predict(self, paths: Sequence[Path], batch_size: int = 32, num_workers: int = 2) -> Iterator[Prediction]:
        raise NotImplementedError

    def predict_in_shares(self, paths: Sequence[Path], batch_size: int = 32, num_workers: int = 2) -> Iterator[
            Prediction]:
        """`predict`, each process of a torchrun job predicting its share: rank 0 gets every prediction, in the order
        of `paths`, each once; the other ranks nothing. With one process, `predict`."""
        job = world.WORLD
        return job.gather_in_order(self.predict(job.shard(paths), batch_size, num_workers), len(paths), batch_size)


class Predictor(Decider):
    """A trained checkpoint ready for inference, with its decision rule."""

    def __init__(self, checkpoint_path: str | Path, device: str | torch.device = "cpu",
                 checkpoint: dict | None = None):
        self.device = world.resolve_device(device)
        checkpoint = checkpoint or load_checkpoint(checkpoint_path)
        self.rule = DecisionRule.of(checkpoint)
        self.attributes = list(self.rule.attributes)
        self.preprocessing = Preprocessing.from_dict(checkpoint["preprocessing"])
        self.precision: str = checkpoint.get("precision", "fp32")
        self.checkpoint = checkpoint
        self.model: AttributeClassifier = model_from_checkpoint(checkpoint, checkpoint_path).to(self.device)
        self.rest = TrainedPart(self.model, self.precision)  # the rest of the model, as training ran it

    @functools.cached_property
    def runner(self) -> BackboneRunner:
        """The frozen stages as `features_of` runs them (BatchNorm folded: built when first used)."""
        return BackboneRunner(inference_backbone(self.model.frozen_part), self.precision)

    @torch.inference_mode()
    def logits(self, frozen: torch.Tensor) -> np.ndarray:
        """Logits (float64, batch x attributes) of the frozen stages' outputs."""
        return self.rest(frozen.to(self.device)).double().cpu().numpy()

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities (batch, attributes; float64) of preprocessed images (batch, 3, H, W)."""
        return torch.from_numpy(self.rule.probabilities(self.logits(self.runner.features(images))))

    def predict(self, paths: Sequence[Path], batch_size: int = 32, num_workers: int = 2) -> Iterator[Prediction]:
        """Predictions in the order of `paths`; unreadable files give a Prediction with `error` set."""
        paths = [Path(path) for path in paths]
        dataset = ImageDataset.unlabelled(paths, self.preprocessing)
        workers = num_workers if len(paths) > batch_size else 0  # a worker costs more than it saves for a few images
        for batch in backbone_batches(self.runner, dataset, batch_size, workers):
            results = {index: Prediction(paths[index], error=message) for index, message in batch["errors"]}
            if batch["features"] is not None:
                rows = self.rule.probabilities(self.logits(batch["features"])).tolist()
                for index, row in zip(batch["index"].tolist(), rows, strict=True):
                    results[index] = Prediction(paths[index], probabilities=row)
            yield from (results[index] for index in sorted(results))
