"""ResNet-18 backbone (He et al. 2016), as used by QShield (arXiv 2604.10933): torchvision's architecture.

``resnet18()`` builds ``torchvision.models.resnet18(weights=None)``. Where torchvision cannot be imported (a
torchvision build that does not match the installed torch fails at import, e.g. a CUDA torchvision next to a
CPU torch), an equivalent module written here is used instead: the same layers, the same parameter and buffer
names and shapes (so torchvision state dicts load into it and vice versa) and the same initialisation.
Weights are only ever read from a local file, never downloaded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch
from torch import nn

from ._base import Classifier

logger = logging.getLogger(__name__)

#: Output width of ResNet-18's trunk (after global average pooling).
RESNET18_FEATURES = 512


class _BasicBlock(nn.Module):
    """torchvision's ``BasicBlock`` (two 3x3 convs, identity or 1x1-conv shortcut); same attribute names."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class _ResNet18Trunk(nn.Module):
    """torchvision's ``ResNet(BasicBlock, [2, 2, 2, 2])`` with 1000 ImageNet classes; same state-dict keys."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), start=1):
            downsample = None
            if stride != 1 or inplanes != planes:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
                )
            setattr(self, f"layer{i}", nn.Sequential(_BasicBlock(inplanes, planes, stride, downsample),
                                                     _BasicBlock(planes, planes)))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(RESNET18_FEATURES, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # type: ignore[operator]
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _new_trunk() -> nn.Module:
    """``torchvision.models.resnet18(weights=None)``, or the identical built-in trunk if torchvision fails."""
    try:
        from torchvision.models import resnet18 as tv_resnet18
    except Exception as err:  # noqa: BLE001 - a mismatched torchvision raises RuntimeError/OSError at import
        logger.info("torchvision unavailable (%s: %s); using the built-in ResNet-18", type(err).__name__, err)
        return _ResNet18Trunk()
    return tv_resnet18(weights=None)


def _read_state_dict(path: str | os.PathLike[str]) -> Mapping[str, torch.Tensor]:
    """Read a ResNet-18 state dict from a local file with ``torch.load(weights_only=True)``."""
    if not os.path.isfile(path):
        raise ValueError(f"pretrained_path={str(path)!r} is not a file; give a local torchvision ResNet-18 state dict")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"pretrained_path={str(path)!r} could not be read as a plain state dict with torch.load(weights_only=True) "
            f"(pickled objects are refused): {err}"
        ) from err
    if isinstance(payload, Mapping) and "state_dict" in payload and isinstance(payload["state_dict"], Mapping):
        payload = payload["state_dict"]
    if not isinstance(payload, Mapping) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ValueError(f"pretrained_path={str(path)!r} does not hold a mapping of parameter names to tensors")
    return payload


def _adapt_conv1(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB conv1 weights ``[64, 3, k, k]`` -> ``[64, in_channels, k, k]``.

    1 channel: the mean over RGB (as the QShield reference does for MNIST/OrganAMNIST); 3: unchanged;
    any other count: that mean repeated on every channel.
    """
    if weight.shape[1] == in_channels:
        return weight
    return weight.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1)


class ResNet18(Classifier):
    """ResNet-18 trunk (``body``, its ``fc`` replaced by identity) + ``classifier`` Linear(512 -> C).

    Built by :func:`resnet18`; ``forward_features`` gives the 512 globally pooled features.
    """

    def __init__(self, body: nn.Module, in_channels: int, num_classes: int, small_input: bool) -> None:
        super().__init__(in_channels, num_classes, image_size=None, min_size=1)
        self.body = body
        self.small_input = small_input
        self.classifier = nn.Linear(RESNET18_FEATURES, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def resnet18(
    in_channels: int,
    num_classes: int,
    pretrained_path: str | os.PathLike[str] | None = None,
    small_input: bool = True,
) -> ResNet18:
    """ResNet-18 for ``[B, in_channels, H, W]`` images and ``num_classes`` classes.

    Args:
        in_channels: 1 (grey) or 3 (RGB), or any other count.
        num_classes: C; a new ``classifier`` Linear(512 -> C) replaces the ImageNet ``fc``.
        pretrained_path: local file with a torchvision ResNet-18 state dict (e.g. the ImageNet weights saved with
            ``torch.save(model.state_dict(), path)``), loaded with ``torch.load(weights_only=True)`` and
            ``strict=True`` (its ``fc`` is dropped). Default None: random initialisation.
        small_input: replace the stem for small images (28/32 px): conv1 becomes 3x3 stride 1 padding 1 and the
            max-pool is removed, so a 32-px image keeps 32x32 resolution into ``layer1`` (4x4 into ``layer4``).
            With pretrained weights the new 3x3 kernel is the centre 3x3 of the pretrained 7x7 kernel.

    With pretrained weights conv1 is adapted to ``in_channels`` with :func:`_adapt_conv1` (mean over RGB for one
    channel, as the reference); without, a changed conv1 is freshly initialised (Kaiming normal, fan-out).
    """
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels={in_channels!r} must be an integer >= 1")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r} must be an integer >= 2")
    state = _read_state_dict(pretrained_path) if pretrained_path is not None else None
    body = _new_trunk()
    if state is not None:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        expected = {k: v.shape for k, v in body.state_dict().items() if not k.startswith("fc.")}
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k])
        if missing or unexpected or wrong:
            raise ValueError(
                f"pretrained_path={str(pretrained_path)!r} is not a torchvision ResNet-18 state dict: "
                f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}, wrong shapes {wrong[:5]}"
            )
        body.load_state_dict(state, strict=False)  # everything but fc, checked above
    if small_input or in_channels != 3:
        conv1: nn.Conv2d = body.conv1  # type: ignore[assignment]
        if small_input:
            new = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            body.maxpool = nn.Identity()
        else:
            new = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if state is not None:  # keep the pretrained kernel: channel-adapted, centre-cropped for the small stem
            weight = _adapt_conv1(conv1.weight.detach(), in_channels)
            with torch.no_grad():
                new.weight.copy_(weight[:, :, 2:5, 2:5] if small_input else weight)
        else:  # fresh initialisation, as torchvision initialises conv layers
            nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
        body.conv1 = new
    body.fc = nn.Identity()
    return ResNet18(body, in_channels, num_classes, small_input)
