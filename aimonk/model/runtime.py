"""Running a frozen backbone fast for inference: BatchNorm folded, channels_last, bf16 autocast, inside workers."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.func import functional_call
from torch.fx.experimental.optimization import fuse
from torch.utils.data import DataLoader, Dataset

from aimonk.data.images import collate_readable
from aimonk.model.classifier import backbone_autocast


def inference_backbone(backbone: nn.Module) -> nn.Module:
    """A copy of a backbone for inference, in channels_last, with each BatchNorm folded into its convolution.

    Same function (to float rounding), one pass less over every activation: about 25 % faster on CPU.
    """
    return fuse(backbone.eval()).to(memory_format=torch.channels_last)


def output_shape(backbone: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of `backbone`'s output for an input of `input_shape`, in eval mode.

    Found on the meta device (shapes only, no arithmetic: milliseconds, and nothing of `backbone` is touched).
    """
    modes = {module: module.training for module in backbone.modules()}
    meta = {name: torch.empty_like(value, device="meta") for name, value in backbone.state_dict().items()}
    try:
        return tuple(functional_call(backbone.eval(), meta, (torch.empty(input_shape, device="meta"),)).shape)
    finally:
        for module, training in modes.items():
            module.training = training


class BackboneRunner:
    """Images -> outputs of a (frozen) backbone in inference mode; also a DataLoader `collate_fn` (outputs on CPU).

    Items may hold one image (3, H, W) or several, e.g. both orientations (k, 3, H, W): outputs follow that shape.
    The output is a feature vector, or a feature map when the backbone is the frozen part of a fine-tuned model.
    """

    def __init__(self, backbone: nn.Module, precision: str):
        self.backbone = backbone
        self.precision = precision

    def __call__(self, items: list[dict]) -> dict:
        return self.embed(collate_readable(items))

    def embed(self, batch: dict) -> dict:
        """A `collate_readable` batch with "features" in place of "image"."""
        images = batch.pop("image")
        batch["features"] = None if images is None else self.features(images).cpu()
        return batch

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's output on its device: bf16 at precision bf16, else float32."""
        device = next(self.backbone.parameters()).device
        flat = images.flatten(0, -4).to(device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), backbone_autocast(self.precision, device):
            # bf16 for every backbone (autocast leaves some, e.g. ConvNeXt's last LayerNorm, in float32), so the
            # feature cache knows each entry's dtype before reading it
            output = self.backbone(flat).to(torch.bfloat16 if self.precision == "bf16" else torch.float32)
        # clone: a normal tensor, not an inference one
        return output.view(*images.shape[:-3], *output.shape[1:]).clone()


def backbone_batches(runner: BackboneRunner, dataset: Dataset, batch_size: int, num_workers: int) -> Iterator[dict]:
    """`collate_readable` batches of `dataset` with "features" in place of "image".

    On a CPU with at least one worker per thread, each (single-threaded) worker decodes and runs the backbone on its
    own batches: decoding then never stalls a forward pass spread over all cores (20-25 % faster on 2 cores,
    measured). Otherwise workers only decode and the main process runs the backbone. (A forked worker must stay
    single-threaded: OpenMP hangs in a child whose parent already ran threads.)
    """
    on_cpu = next(runner.backbone.parameters()).device.type == "cpu"
    in_workers = on_cpu and num_workers >= torch.get_num_threads()
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                        collate_fn=runner if in_workers else collate_readable)
    for batch in loader:
        yield batch if in_workers else runner.embed(batch)
