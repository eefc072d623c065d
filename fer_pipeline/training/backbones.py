"""Backbones for 48x48 grayscale facial-expression classification, registered by name for the YAML recipes."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def deco(fn):
        BACKBONES[name] = fn
        return fn

    return deco


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


@register("vgg")
def vgg(num_classes: int = 7, widths: tuple[int, ...] = (32, 64, 128, 256),
        convs_per_stage: int | tuple[int, ...] = 2, dropout: float = 0.3, in_channels: int = 1) -> nn.Module:
    """VGG-style CNN: stages of ``convs_per_stage`` conv3x3+BN+ReLU, max-pool between stages, global average pool,
    dropout, linear head.

    ``convs_per_stage`` is one count for every stage or one count per stage (e.g. ``[2, 2, 3, 3]``: the deeper,
    low-resolution stages are cheap per layer on a 48x48 input).

    A compact version of the VGG variant of Khaireddin & Chen 2021 ("Facial Emotion Recognition: State of the Art
    Performance on FER2013", arXiv 2105.03588), sized for CPU training.

    Input ``(B, in_channels, 48, 48) float32`` (standardised), output ``(B, num_classes)`` logits.
    """
    layers, cin = _vgg_stages(widths, convs_per_stage, 0, len(widths), in_channels)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                         nn.Linear(cin, num_classes))


def _vgg_stages(widths, convs_per_stage, first: int, last: int, cin: int) -> tuple[list[nn.Module], int]:
    """Layers of stages ``first..last-1`` of the :func:`vgg` layout (a max-pool before every stage but the first,
    then its conv3x3+BN+ReLU blocks) and their output width."""
    counts = [convs_per_stage] * len(widths) if isinstance(convs_per_stage, int) else list(convs_per_stage)
    if len(counts) != len(widths):
        raise ValueError(f"convs_per_stage has {len(counts)} entries for {len(widths)} stages")
    layers: list[nn.Module] = []
    for i in range(first, last):
        if i > 0:
            layers.append(nn.MaxPool2d(2))
        for _ in range(counts[i]):
            layers.append(_conv_bn(cin, widths[i]))
            cin = widths[i]
    return layers, cin


class SharedRepresentationEnsemble(nn.Module):
    """Ensemble with shared representations (ESR; Siqueira, Magg & Wermter, AAAI 2020, arXiv 2001.06338): one
    shared trunk of early layers and ``K`` independent branches of later layers, each with its own head.

    In training mode the output is ``(B, K, C)``: every branch's logits, so that each branch gets its own loss
    (:class:`~fer_pipeline.training.module.EmotionClassifier` sums them, as the paper trains each branch on its own
    loss); in eval mode (validation, export) it is ``(B, C)``: the log of the branches' mean softmax, so a softmax
    of the output is the ensemble's averaged probability and the exported graph is an ordinary emotion model.
    """

    def __init__(self, trunk: nn.Module, branches: list[nn.Module]) -> None:
        super().__init__()
        self.trunk = trunk
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.trunk(x)
        logits = torch.stack([b(z) for b in self.branches], 1)  # (B, K, C)
        if self.training:
            return logits
        return torch.logsumexp(torch.log_softmax(logits, 2), 1) - math.log(len(self.branches))


@register("esr_vgg")
def esr_vgg(num_classes: int = 7, widths: tuple[int, ...] = (32, 64, 128, 256), shared_stages: int = 2,
            branches: int = 4, convs_per_stage: int | tuple[int, ...] = 2, dropout: float = 0.3,
            in_channels: int = 1) -> SharedRepresentationEnsemble:
    """:class:`SharedRepresentationEnsemble` over the :func:`vgg` layout: the first ``shared_stages`` stages shared,
    the remaining stages, pool, dropout and linear head repeated in ``branches`` branches.

    Cost: on a 48x48 input each of the 4 stages of the default widths costs about the same multiply-adds
    (22-32 M: resolution falls by 4 as width doubles), so 2 shared stages + 4 branches of 2 stages is about
    2.6x the single :func:`vgg` network, against 4x for 4 separate networks.

    Input ``(B, in_channels, 48, 48) float32`` (standardised); output ``(B, K, num_classes)`` branch logits in
    training mode, ``(B, num_classes)`` log mean probabilities in eval mode.

    Raises:
        ValueError: ``shared_stages`` not in ``[1, len(widths) - 1]`` or ``branches < 1``.
    """
    if not 1 <= shared_stages < len(widths) or branches < 1:
        raise ValueError(f"need 1 <= shared_stages < {len(widths)} and branches >= 1, got {shared_stages}, {branches}")

    trunk, cin = _vgg_stages(widths, convs_per_stage, 0, shared_stages, in_channels)
    heads = []
    for _ in range(branches):
        layers, cout = _vgg_stages(widths, convs_per_stage, shared_stages, len(widths), cin)
        heads.append(nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                   nn.Linear(cout, num_classes)))
    return SharedRepresentationEnsemble(nn.Sequential(*trunk), heads)


@register("mlp")
def mlp(num_classes: int = 7, hidden: tuple[int, ...] = (1024, 512), dropout: float = 0.3,
        in_channels: int = 1, input_hw: tuple[int, int] = (48, 48)) -> nn.Module:
    """Fully connected net over the raw pixels (the "fully connected" baseline of the project brief)."""
    layers: list[nn.Module] = [nn.Flatten()]
    cin = in_channels * input_hw[0] * input_hw[1]
    for h in hidden:
        layers += [nn.Linear(cin, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        cin = h
    layers.append(nn.Linear(cin, num_classes))
    return nn.Sequential(*layers)


# --- torchvision architectures, adapted to 48x48 grayscale -------------------------------------------------------
# Built from torchvision's own definitions (weights=None: trained from scratch here); only the stem, and where
# noted the head, are changed. Every one takes ``(N, 1, 48, 48) float32`` (standardised pixels) and returns
# ``(N, num_classes) float32`` logits; each exports to ONNX (opset 17) through fer_pipeline.training.export.


def _resnet(arch: str, num_classes: int, in_channels: int) -> nn.Module:
    from torchvision import models

    net = getattr(models, arch)(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision inits conv1
    return net


@register("resnet18")
def resnet18(num_classes: int = 7, in_channels: int = 1) -> nn.Module:
    """ResNet-18 (He et al. 2016), ``torchvision.models.resnet18(weights=None)`` adapted to 48x48 grayscale.

    Changed from torchvision's definition:
        - ``conv1``: 7x7 stride-2 conv over 3 channels -> 3x3 stride-1 conv over ``in_channels`` (1): a 48 px face
          cannot afford the ImageNet stem's 4x downsampling before the first block (a 224 px image keeps 56x56
          after it, a 48 px face would keep 12x12).
        - the 3x3 stride-2 max-pool after it is kept: the four stages then run at 24, 12, 6 and 3 px, so the last
          feature map is 3x3 (as 7x7 for a 224 px image). Dropping it too would give 6x6 and 4x the compute
          (the CIFAR-style variant: about 11 img/s training here, too slow for the 2-core CPU).
        - ``fc``: 512 -> ``num_classes`` (7) instead of 1000.

    Parameters: 11,171,271 (7 classes); 0.31 G multiply-adds per face. Input ``(N, 1, 48, 48) float32``
    (standardised), output ``(N, 7) float32`` logits; any input of at least 8x8 runs (global average pool before
    ``fc``).
    """
    return _resnet("resnet18", num_classes, in_channels)


@register("resnet50")
def resnet50(num_classes: int = 7, in_channels: int = 1) -> nn.Module:
    """ResNet-50 (He et al. 2016, bottleneck blocks), ``torchvision.models.resnet50(weights=None)`` adapted to 48x48
    grayscale.

    Changed from torchvision's definition:
        - ``conv1``: 7x7 stride-2 conv over 3 channels -> 3x3 stride-1 conv over ``in_channels`` (1) (see
          :func:`resnet18`: the ImageNet stem downsamples 4x before the first block).
        - the stride-2 max-pool is kept, so the stages run at 24, 12, 6 and 3 px and the last map is 3x3.
        - ``fc``: 2048 -> ``num_classes`` (7) instead of 1000.

    Parameters: 23,513,543 (7 classes); 0.73 G multiply-adds per face. Input ``(N, 1, 48, 48) float32``
    (standardised), output ``(N, 7) float32`` logits.
    """
    return _resnet("resnet50", num_classes, in_channels)


@register("mobilenet_v2")
def mobilenet_v2(num_classes: int = 7, in_channels: int = 1, dropout: float = 0.2) -> nn.Module:
    """MobileNetV2 (Sandler et al. 2018), ``torchvision.models.mobilenet_v2(weights=None)`` adapted to 48x48
    grayscale.

    Changed from torchvision's definition:
        - first convolution (``features[0][0]``): 3x3 stride 2 over 3 channels -> 3x3 stride 1 over
          ``in_channels`` (1). torchvision's network downsamples 32x (224 px -> 7x7); with stride 1 here it
          downsamples 16x, so a 48 px face ends on a 3x3 map instead of 2x2 (1.5 rounded up).
        - classifier: dropout ``dropout`` (0.2, torchvision's default) then 1280 -> ``num_classes`` (7).
        Width multiplier 1.0, inverted-residual settings and ReLU6 are torchvision's.

    Parameters: 2,232,263 (7 classes); 0.054 G multiply-adds per face. Input ``(N, 1, 48, 48) float32``
    (standardised), output ``(N, 7) float32`` logits.
    """
    from torchvision import models

    net = models.mobilenet_v2(weights=None, num_classes=num_classes, dropout=dropout)
    old = net.features[0][0]
    net.features[0][0] = nn.Conv2d(in_channels, old.out_channels, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.features[0][0].weight, mode="fan_out")  # as torchvision inits its convs
    return net


@register("vgg16")
def vgg16(num_classes: int = 7, in_channels: int = 1, hidden: int = 512, dropout: float = 0.5) -> nn.Module:
    """VGG-16 (Simonyan & Zisserman 2015), ``torchvision.models.vgg16_bn(weights=None)`` adapted to 48x48 grayscale.

    Changed from torchvision's definition:
        - the batch-normalised variant (``vgg16_bn``, configuration "D" with BN after every conv): the recipe
          family trains every network from scratch with SGD at a OneCycle peak lr of 0.1, at which plain VGG-16
          without BN does not train; the 13 convolutions, their widths (64-512) and the 3x3 kernels are unchanged.
        - first convolution: 3 input channels -> ``in_channels`` (1).
        - the fifth (last) max-pool is removed: five 2x pools take 48 px to 1.5 px (1x1 after flooring), four take
          it to 3x3, where the last three convs (512 wide) still see a spatial neighbourhood.
        - ``avgpool``: adaptive 7x7 -> global average pool (1x1), and the classifier 25088-4096-4096-1000 ->
          512-``hidden``-``hidden``-``num_classes`` (512-512-512-7, ReLU and dropout ``dropout`` between, as in
          torchvision's head): the ImageNet head alone would have 120 M parameters for a 3x3x512 map.

    Parameters: 15,250,887 (7 classes, ``hidden`` 512); 0.70 G multiply-adds per face. Input
    ``(N, 1, 48, 48) float32`` (standardised), output ``(N, 7) float32`` logits.
    """
    from torchvision import models

    net = models.vgg16_bn(weights=None)
    old = net.features[0]
    net.features[0] = nn.Conv2d(in_channels, old.out_channels, 3, padding=1)
    nn.init.kaiming_normal_(net.features[0].weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(net.features[0].bias)
    assert isinstance(net.features[-1], nn.MaxPool2d)
    net.features = net.features[:-1]
    net.avgpool = nn.AdaptiveAvgPool2d(1)
    net.classifier = nn.Sequential(nn.Linear(512, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                   nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                   nn.Linear(hidden, num_classes))
    for m in net.classifier:
        if isinstance(m, nn.Linear):  # torchvision's init for the head
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return net


class _Upsampled(nn.Module):
    """Bilinear resize to ``size`` x ``size`` in front of ``net`` (inside the model, so it is in the ONNX graph)."""

    def __init__(self, net: nn.Module, size: int) -> None:
        super().__init__()
        self.net, self.size = net, int(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.net(x)


@register("inception_v3")
def inception_v3(num_classes: int = 7, in_channels: int = 1, input_size: int = 75, dropout: float = 0.5) -> nn.Module:
    """Inception-v3 (Szegedy et al. 2016), ``torchvision.models.inception_v3(weights=None, aux_logits=False,
    init_weights=True)`` adapted to 48x48 grayscale.

    Changed from torchvision's definition:
        - the input is resized inside the model, bilinearly (``F.interpolate``, ``align_corners=False``; an ONNX
          ``Resize`` node in the export), from 48x48 to ``input_size`` x ``input_size`` (default 75): the network's
          unpadded stride-2 convolutions and pools need at least 75x75 (smaller inputs reach a 0x0 map). At 75
          the last map is 1x1 (8x8 at torchvision's 299); each step up in size costs quadratically more
          (96 px: 1.7x the multiply-adds of 75 px).
        - ``Conv2d_1a_3x3``: 3 input channels -> ``in_channels`` (1), same 3x3 stride 2, BN and ReLU.
        - no auxiliary classifier (``aux_logits=False``; it hangs off the 17x17 map at 299 px, 3x3 here) and no
          ``transform_input`` (ImageNet colour re-normalisation); ``fc`` 2048 -> ``num_classes`` (7).
        - ``fc`` initialised N(0, 0.01), bias 0 (as torchvision initialises the VGG and MobileNetV2 heads) instead
          of torchvision's truncated N(0, 0.1): with that, the untrained network's logits have a spread of about
          4 (first training loss 5.7-6.7, against ln 7 = 1.95 for a uniform guess), and a first 20-CPU-minute
          run (peak lr 0.05) never left the majority class (PublicTest 25.0-25.6% at 4 validations, 450 steps).

    Parameters: 21,799,335 (7 classes; the resize has none); 0.20 G multiply-adds per face at 75 px. Input
    ``(N, 1, 48, 48) float32`` (standardised; other sizes are resized the same way), output ``(N, 7) float32``
    logits.

    Raises:
        ValueError: ``input_size`` < 75.
    """
    from torchvision import models

    if input_size < 75:
        raise ValueError(f"inception_v3 needs input_size >= 75, got {input_size}")
    net = models.inception_v3(weights=None, aux_logits=False, init_weights=True, num_classes=num_classes,
                              dropout=dropout, transform_input=False)
    old = net.Conv2d_1a_3x3
    net.Conv2d_1a_3x3 = type(old)(in_channels, old.conv.out_channels, kernel_size=3, stride=2)
    nn.init.trunc_normal_(net.Conv2d_1a_3x3.conv.weight, mean=0.0, std=0.1, a=-2, b=2)  # torchvision's init
    nn.init.normal_(net.fc.weight, 0.0, 0.01)
    nn.init.zeros_(net.fc.bias)
    return _Upsampled(net, input_size)


def build_backbone(name: str, **kwargs) -> nn.Module:
    """Build a registered backbone.

    Raises:
        ValueError: ``name`` is not registered.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}")
    return BACKBONES[name](**kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["BACKBONES", "SharedRepresentationEnsemble", "build_backbone", "count_parameters", "register", "torch"]
