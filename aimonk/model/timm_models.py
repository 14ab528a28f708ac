"""timm backbones (`--backbone timm:NAME`): any model `timm.list_models()` knows (or NAME.TAG, one of its pretrained
weights), with the preprocessing its weights were evaluated with (timm's `resolve_data_config`: mean, std,
interpolation, crop share) and its stages (the modules `feature_info` names, in the order they run).

timm is the optional extra `aimonk[timm]`: this module is imported by `aimonk.model.backbones` only when a `timm:`
name is asked for, and imports timm then, so the default path never loads it.
"""

from __future__ import annotations

import difflib
import functools
from typing import Any

import torch
from torch import nn

from aimonk.errors import AimonkError

ALLCLOSE = {"rtol": 1e-4, "atol": 1e-5}  # how closely the stages in sequence must give the network's features


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise AimonkError("--backbone timm:NAME needs timm: pip install 'aimonk[timm]'") from None
    return timm


@functools.cache
def known_name(name: str) -> str:
    """`name` if timm knows it (an architecture, or architecture.tag of pretrained weights); else one line saying
    so, with the closest names."""
    timm = _timm()
    architecture, tag = timm.models.split_model_name_tag(name)
    if timm.is_model(architecture) and (not tag or name in timm.list_pretrained(name)):
        return name
    known = timm.list_models() + (timm.list_pretrained(f"{architecture}.*") if tag else [])
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(f'timm:{c}' for c in close)}?" if close else " (see timm.list_models())"
    raise AimonkError(f"unknown backbone 'timm:{name}': timm {timm.__version__} has no model {name!r}{hint}")


def spec_fields(name: str) -> dict[str, Any]:
    """The fields of a `BackboneSpec` for timm model `name` (checked by `known_name`)."""
    timm = _timm()
    config = timm.models.get_pretrained_cfg(name)
    data = timm.data.resolve_data_config({}, pretrained_cfg=config.to_dict(), use_test_size=True)
    hub = config.hf_hub_id or f"timm/{name}"
    if not config.classifier:  # an encoder without a classification head (some VLM towers)
        raise AimonkError(f"timm:{name} is an encoder without a classifier, which aimonk replaces by its head; "
                          "choose a classification model")
    return {
        "build": functools.partial(timm.create_model, name, pretrained=False),
        "classifier": config.classifier if isinstance(config.classifier, str) else config.classifier[0],
        "stages": stages,
        "pretrained": functools.partial(pretrained_state, name),
        "pretrained_name": f"timm:{hub.removeprefix('timm/')}",
        "remedy": f"run once with network access (timm keeps {hub} in the Hugging Face cache, $HF_HOME), save "
                  f"torch.save(timm.create_model({name!r}, pretrained=True).state_dict(), PATH) where it can be "
                  "loaded and pass --weights PATH, or use --weights none",
        "mean": tuple(data["mean"]),
        "std": tuple(data["std"]),
        "interpolation": data["interpolation"],
        "crop_share": float(data["crop_pct"]),
        "image_size": int(data["input_size"][-1]),
        "digest": True,
    }


def pretrained_state(name: str) -> dict[str, torch.Tensor]:
    """The weights timm loads for `name` itself (its hub, or its cache); raises where they cannot be had."""
    return _timm().create_model(name, pretrained=True).state_dict()


def stages(network: nn.Module) -> list[nn.Module]:
    """The network as the stages `feature_info` names, each ending at one of its modules, the last with the pooling
    and the head; a network whose top-level modules do not make its forward pass in sequence (a ViT adds position
    embeddings in between) is one stage: fine-tuned whole or frozen whole."""
    ends = [info["module"] for info in getattr(network, "feature_info", [])]
    modules = _in_order(network, ends)
    if not ends or any(end not in modules for end in ends):
        return [network]
    names = list(modules)
    cuts = [names.index(end) + 1 for end in ends[:-1]]
    groups = [names[start:stop] for start, stop in zip([0, *cuts], [*cuts, len(names)], strict=True)]
    sequence = [nn.Sequential(*(modules[name] for name in group)) for group in groups if group]
    return sequence if _same_as(network, sequence) else [network]


def _in_order(network: nn.Module, ends: list[str]) -> dict[str, nn.Module]:
    """The top-level modules, an `nn.Sequential` among them opened one level where a stage ends inside it (timm's
    `blocks`, `stages`)."""
    modules: dict[str, nn.Module] = {}
    for name, child in network.named_children():
        if isinstance(child, nn.Sequential) and any(end.startswith(f"{name}.") for end in ends):
            modules.update({f"{name}.{inner}": block for inner, block in child.named_children()})
        else:
            modules[name] = child
    return modules


def _same_as(network: nn.Module, sequence: list[nn.Module]) -> bool:
    """Whether the stages applied one after the other compute the network's features (checked on random images)."""
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    training = network.training
    network.eval()
    try:
        with torch.no_grad():
            whole = network(images)
            output = images
            for stage in sequence:
                output = stage(output)
        return output.shape == whole.shape and torch.allclose(output, whole, **ALLCLOSE)
    except Exception:  # noqa: BLE001 - a module that cannot run alone means the sequence is not the network
        return False
    finally:
        network.train(training)
