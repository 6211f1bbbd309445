import pytest
import torch

import fdrl
from fdrl.models import PretrainedWeightsError, ResNet18Trunk


def _torchvision_style_state():
    torch.manual_seed(3)
    trunk = ResNet18Trunk()
    state = dict(trunk.state_dict())
    state["fc.weight"] = torch.randn(1000, 512)
    state["fc.bias"] = torch.randn(1000)
    return trunk, state


def test_loads_torchvision_format(tmp_path):
    trunk, state = _torchvision_style_state()
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(state, path)
    model = fdrl.create_model("fdrl_resnet18", pretrained_path=str(path))
    torch.testing.assert_close(model.backbone.conv1.weight, trunk.conv1.weight)


def test_loads_msceleb_format_with_module_prefix_and_fc(tmp_path):
    trunk, state = _torchvision_style_state()
    state = {f"module.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    state["module.fc.weight"] = torch.randn(12666, 512)  # MS-Celeb identities
    path = tmp_path / "resnet18_msceleb.pth"
    torch.save({"state_dict": state, "epoch": 10}, path)
    model = fdrl.create_model("baseline_resnet18", num_classes=7, pretrained_path=str(path))
    torch.testing.assert_close(model.backbone.layer4[1].bn2.running_var, trunk.layer4[1].bn2.running_var)


def test_wrong_state_dict_fails_listing_keys(tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save({"conv1.weight": torch.randn(64, 3, 7, 7), "layer1.0.conv3.weight": torch.randn(256, 64, 1, 1)}, path)
    with pytest.raises(PretrainedWeightsError, match=r"(?s)missing keys .*unexpected keys \(1\).*conv3"):
        fdrl.create_model("fdrl_resnet18", pretrained_path=str(path))
    with pytest.raises(PretrainedWeightsError, match="never downloaded"):
        fdrl.create_model("fdrl_resnet18", pretrained_path=str(tmp_path / "nope.pth"))
