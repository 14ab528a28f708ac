"""`--backbone timm:NAME`: any timm model as a backbone, with timm's preprocessing, stages and weights; timm is
loaded only when such a name is used. Tiny models of timm's own (`test_resnet`: 0.5 M parameters) keep it fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT

from aimonk.cli import main
from aimonk.errors import AimonkError, WeightsUnavailableError
from aimonk.model import timm_models
from aimonk.model.backbones import build_backbone, preprocessing_for
from aimonk.model.classifier import build_model
from aimonk.registry import BACKBONES

timm = pytest.importorskip("timm")  # the optional extra aimonk[timm], part of aimonk[dev]


@pytest.mark.parametrize(("name", "stages"), [("test_resnet", 5), ("test_efficientnet", 5), ("test_convnext", 4),
                                              ("mobilenetv3_small_050", 5), ("test_vit", 1)])
def test_the_stages_applied_in_sequence_are_the_network_a_vit_one_stage(name: str, stages: int):
    network, width, origin = build_backbone(f"timm:{name}", "none")
    sequence = BACKBONES[f"timm:{name}"].stages(network.eval())
    assert origin == "random" and len(sequence) == stages
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        output = images
        for stage in sequence:
            output = stage(output)
        assert output.shape == (2, width)
        torch.testing.assert_close(output, network(images))


def test_the_last_stages_fine_tune_and_the_first_stay_frozen():
    model, _ = build_model(3, "timm:test_resnet", "none", trainable_stages=2)
    trainable = {id(p) for stage in model.stages[-2:] for p in stage.parameters()}
    frozen = {id(p) for stage in model.stages[:-2] for p in stage.parameters()}
    assert trainable and frozen and not trainable & frozen
    assert {id(p) for p in model.trainable_part.parameters()} == trainable


def test_preprocessing_is_timms_data_config_and_reaches_the_cache_key():
    config = timm.data.resolve_data_config({}, pretrained_cfg=timm.models.get_pretrained_cfg("resnet10t").to_dict(),
                                           use_test_size=True)
    preprocessing = preprocessing_for("timm:resnet10t", 96, "crop")
    assert (preprocessing.mean, preprocessing.std) == (config["mean"], config["std"])
    assert (preprocessing.interpolation, preprocessing.crop_share) == ("bicubic", config["crop_pct"]) == \
        ("bicubic", 0.95)
    assert preprocessing.as_dict()["interpolation"] == "bicubic" and preprocessing.as_dict()["crop_share"] == 0.95
    assert "interpolation" not in preprocessing_for("resnet18", 96, "crop").as_dict()  # torchvision's keys as before
    assert preprocessing.load(ROOT / "images" / "image_0.jpg").shape == (3, 96, 96)


def test_a_saved_timm_state_dict_is_loaded_with_its_digest(tmp_path: Path):
    reference = timm.create_model("test_resnet", pretrained=False)
    torch.nn.init.normal_(reference.conv1[0].weight)
    torch.save(reference.state_dict(), tmp_path / "test_resnet.pth")
    network, width, origin = build_backbone("timm:test_resnet", str(tmp_path / "test_resnet.pth"))
    assert width == 96 and origin.startswith("file:test_resnet.pth:sha256:")
    assert torch.equal(network.conv1[0].weight, reference.conv1[0].weight)


def test_imagenet_weights_come_from_timms_loading_and_name_their_digest(monkeypatch):
    reference = timm.create_model("test_resnet", pretrained=False)
    BACKBONES["timm:test_resnet"]  # made before timm's loading is replaced
    asked = []
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained=False, **kwargs: asked.append(
        (name, pretrained)) or reference)  # stands for the hub: this machine has no network
    network, _, origin = build_backbone("timm:test_resnet", "imagenet")
    assert ("test_resnet", True) in asked
    assert origin.startswith("imagenet:timm:test_resnet.r160_in1k:sha256:") and len(origin.rsplit(":", 1)[1]) == 16
    assert torch.equal(network.conv1[0].weight, reference.conv1[0].weight)


def test_without_weights_imagenet_is_refused_and_auto_warns_with_the_remedy(monkeypatch):
    def offline(name: str, pretrained: bool = False, **kwargs: object) -> torch.nn.Module:
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    BACKBONES["timm:test_resnet"]
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(WeightsUnavailableError, match=r"timm:test_resnet.r160_in1k are not available here .*"
                                                      r"--weights PATH, or use --weights none"):
        build_backbone("timm:test_resnet", "imagenet")
    monkeypatch.undo()
    monkeypatch.setattr(timm_models, "pretrained_state", offline)
    monkeypatch.setattr(BACKBONES, "_made", {})  # the spec is made again, with the offline loading
    with pytest.warns(UserWarning, match="CONTINUING WITH A RANDOMLY INITIALISED BACKBONE"):
        assert build_backbone("timm:test_resnet", "auto")[2] == "random"


@pytest.mark.parametrize(("name", "words"), [
    ("timm:resnet10", ["unknown backbone 'timm:resnet10'", "did you mean timm:resnet10t"]),
    ("timm:resnet10t.no_such_tag", ["no model 'resnet10t.no_such_tag'", "timm:resnet10t"]),
    ("resnet", ["unknown backbone 'resnet'", "efficientnet_lite0, timm:NAME"]),
])
def test_an_unknown_name_is_one_line_with_the_closest_names(name, words, capsys, tmp_path):
    assert main(["train", "--backbone", name, "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(word in err for word in words), err
    assert not (tmp_path / "out").exists()


def test_without_timm_a_timm_name_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    monkeypatch.setattr(BACKBONES, "_made", {})
    with pytest.raises(AimonkError, match=r"^--backbone timm:NAME needs timm: pip install 'aimonk\[timm\]'$"):
        BACKBONES["timm:test_resnet"]


def test_a_timm_name_is_an_option_everywhere_yet_the_default_path_never_loads_timm():
    code = ("import sys, aimonk.train; from aimonk.config import TrainConfig, choices_of; "
            "TrainConfig(backbone='resnet18').check(); print(json.dumps([choices_of('backbone'), "
            "sorted(m for m in sys.modules if m == 'timm' or m.endswith('timm_models'))]))")
    printed = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True,
                             check=True, cwd=ROOT).stdout
    choices, loaded = json.loads(printed)
    assert "timm:NAME" in choices and "resnet18" in choices and loaded == []


def test_a_timm_model_trains_at_its_own_input_size_unless_image_size_is_given(tmp_path: Path):
    from helpers import write_dataset

    from aimonk.checkpoint import load_checkpoint
    from aimonk.config import TrainConfig
    from aimonk.model.backbones import sized_for_backbone

    native = timm.data.resolve_data_config({}, pretrained_cfg=timm.models.get_pretrained_cfg("test_resnet").to_dict(),
                                           use_test_size=True)["input_size"][-1]
    assert native != 224  # else this test could not tell the two apart
    data = write_dataset(tmp_path / "data", [f"i{k}.jpg {k % 2} {(k // 2) % 2}" for k in range(12)], size=24)
    for given, expected in (((), native), (("--image-size", "48"), 48)):
        out = tmp_path / f"out{len(given)}"
        assert main(["train", "--data-dir", str(data), "--out-dir", str(out), "--backbone", "timm:test_resnet",
                     "--weights", "none", "--epochs", "1", "--workers", "0", "--quiet", "--no-feature-cache",
                     *given]) == 0
        checkpoint = load_checkpoint(out / "aimonk_model.pth")
        assert checkpoint["preprocessing"]["image_size"] == checkpoint["train_config"]["image_size"] == expected
    assert sized_for_backbone(TrainConfig.from_recipe("reference")).image_size == 224  # torchvision's as before
