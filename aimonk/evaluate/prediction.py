"""Load a checkpoint and predict attributes for image files, in batches, with per-attribute thresholds."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from aimonk import distributed
from aimonk.checkpoint import load_checkpoint
from aimonk.data.images import ImageDataset, Preprocessing
from aimonk.distributed import resolve_device
from aimonk.model.classifier import model_from_checkpoint
from aimonk.model.runtime import BackboneRunner, backbone_batches, inference_backbone


@dataclass
class Prediction:
    """One image's result: probabilities per attribute, or the reason it could not be read."""

    path: Path
    probabilities: list[float] | None = None
    error: str | None = None


class Predictor:
    """A trained model ready for inference, with what its checkpoint says of each attribute: name, threshold,
    temperature, and whether the model can tell it at all.

    With `calibrated=False` the temperatures are left out (what tuning them starts from).
    """

    def __init__(self, checkpoint_path: str | Path, device: str | torch.device = "cpu", calibrated: bool = True):
        self.device = resolve_device(device)
        checkpoint = load_checkpoint(checkpoint_path)
        self.attributes: list[str] = list(checkpoint["attributes"])
        self.thresholds: list[float] = [float(value) for value in checkpoint["thresholds"]]
        self.learnable: list[bool] = list(checkpoint.get("learnable", [True] * len(self.attributes)))
        ones = [1.0] * len(self.attributes)
        self.temperatures = torch.tensor(checkpoint.get("temperatures", ones) if calibrated else ones)
        self.preprocessing = Preprocessing.from_dict(checkpoint["preprocessing"])
        self.precision: str = checkpoint.get("precision", "fp32")
        self.checkpoint = checkpoint
        self.model = model_from_checkpoint(checkpoint, checkpoint_path).to(self.device)
        # The backbone as training's feature cache runs it, so a training image gets the features it was trained on.
        self.runner = BackboneRunner(inference_backbone(self.model.backbone), self.precision)

    @property
    def cannot_judge(self) -> list[str]:
        """Attributes the model was found no better than chance at (or too rarely labelled to tell): never decided."""
        return [name for name, learnable in zip(self.attributes, self.learnable, strict=True) if not learnable]

    def decisions(self, probabilities: Sequence[float]) -> list[bool | None]:
        """Per attribute: present (its probability reaches its threshold), absent, or None where none is made."""
        return [p >= t if learnable else None
                for p, t, learnable in zip(probabilities, self.thresholds, self.learnable, strict=True)]

    def present_attributes(self, probabilities: Sequence[float]) -> list[str]:
        """Names of the attributes decided present."""
        return [name for name, present in zip(self.attributes, self.decisions(probabilities), strict=True) if present]

    def csv_header(self) -> list[str]:
        """`image`, `p_<attribute>` (probability) and `<attribute>` (decision) for each attribute, `error`."""
        return ["image", *(f"p_{name}" for name in self.attributes), *self.attributes, "error"]

    def csv_row(self, prediction: Prediction) -> list[str]:
        """One image: probabilities to 6 decimals, decisions 1/0 (empty where none is made), or the error alone."""
        empty = [""] * len(self.attributes)
        if prediction.error:
            return [str(prediction.path), *empty, *empty, prediction.error]
        decisions = self.decisions(prediction.probabilities)
        return [str(prediction.path), *(f"{p:.6f}" for p in prediction.probabilities),
                *("" if present is None else str(int(present)) for present in decisions), ""]

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Sigmoid outputs (batch, attributes) for preprocessed images (batch, 3, H, W)."""
        return self._head(self.runner.features(images))

    @torch.inference_mode()
    def _head(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.model.head(features.to(self.device).float()).cpu()
        return torch.sigmoid(logits / self.temperatures)

    def predict_in_shares(self, paths: Sequence[Path], batch_size: int = 32, num_workers: int = 2,
                          everywhere: bool = False) -> Iterator[Prediction]:
        """`predict`, each process of a torchrun job predicting its share: rank 0 (every rank with `everywhere`) gets
        every prediction, in the order of `paths`, each once; the other ranks nothing. With one process, `predict`."""
        world = distributed.world()
        mine = self.predict(world.shard(paths), batch_size, num_workers)
        return world.gather_in_order(mine, len(paths), batch_size, everywhere)

    def predict(self, paths: Sequence[Path], batch_size: int = 32, num_workers: int = 2) -> Iterator[Prediction]:
        """Predictions in the order of `paths`; unreadable files give a Prediction with `error` set."""
        paths = [Path(path) for path in paths]
        dataset = ImageDataset.unlabelled(paths, self.preprocessing)
        workers = num_workers if len(paths) > batch_size else 0  # a worker costs more than it saves for a few images
        for batch in backbone_batches(self.runner, dataset, batch_size, workers):
            results = {index: Prediction(paths[index], error=message) for index, message in batch["errors"]}
            if batch["features"] is not None:
                rows = self._head(batch["features"]).tolist()
                for index, row in zip(batch["index"].tolist(), rows, strict=True):
                    results[index] = Prediction(paths[index], probabilities=row)
            yield from (results[index] for index in sorted(results))
