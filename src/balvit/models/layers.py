"""Small building blocks shared by the models: conv blocks, point MLPs, up-sampling, heads.

The residual range-view block follows the context blocks of SalsaNext (Cortinhal et al., ISVC
2020) as used in RangeViT's stem (Ando et al., CVPR 2023): a 1x1 shortcut, then 3x3 and dilated
3x3 convolutions (`ResContextBlock`: conv -> BN -> LeakyReLU(0.1), this toolkit's order;
`SalsaContextBlock` / `SalsaResBlock` / `ConvActBN`: the official conv -> LeakyReLU(0.01) -> BN
order with biases, which official RangeViT checkpoints need). Polar BEV convolutions pad the azimuth axis circularly (PolarNet, Zhang et al.,
CVPR 2020), since azimuth bin 0 and bin A-1 are neighbours.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1, act: bool = True):
        pad = dilation * (k - 1) // 2
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.LeakyReLU(0.1, inplace=True))
        super().__init__(*layers)


class ResContextBlock(nn.Module):
    """x -> 1x1 -> (3x3 -> dilated 3x3) + shortcut: (B, cin, H, W) -> (B, cout, H, W)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.short = ConvBNAct(cin, cout, k=1)
        self.conv1 = ConvBNAct(cout, cout, k=3)
        self.conv2 = ConvBNAct(cout, cout, k=3, dilation=2, act=False)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.short(x)
        return self.act(s + self.conv2(self.conv1(s)))


class PolarConv(nn.Module):
    """3x3 conv on a (B, C, radius, azimuth) grid: zero padding in radius, circular in azimuth."""

    def __init__(self, cin: int, cout: int, stride: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 0, 0), mode="circular")
        x = F.pad(x, (0, 0, 1, 1))
        return self.act(self.bn(self.conv(x)))


class PointMLP(nn.Sequential):
    """Per-point MLP: Linear -> BN -> ReLU blocks, (N, cin) -> (N, widths[-1])."""

    def __init__(self, cin: int, widths: list[int]):
        layers: list[nn.Module] = []
        for w in widths:
            layers += [nn.Linear(cin, w, bias=False), nn.BatchNorm1d(w), nn.ReLU(inplace=True)]
            cin = w
        super().__init__(*layers)


def patch_unshuffle(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """Pixel shuffle for non-square patches: (B, C*ph*pw, Ht, Wt) -> (B, C, Ht*ph, Wt*pw)."""
    b, c, h, w = x.shape
    c_out = c // (ph * pw)
    x = x.view(b, c_out, ph, pw, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c_out, h * ph, w * pw)


class SegHead(nn.Module):
    """Point classifier: (N, cin) -> hidden -> (N, num_classes)."""

    def __init__(self, cin: int, hidden: int, num_classes: int):
        super().__init__()
        self.mlp = PointMLP(cin, [hidden])
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.mlp(x))


class SalsaContextBlock(nn.Module):
    """SalsaNext's residual context block exactly as RangeViT's stem has it (valeoai/rangevit
    models/stems.py ResContextBlock; Cortinhal et al., ISVC 2020): every conv has a bias and is
    followed by LeakyReLU(0.01), then BatchNorm; no activation after the sum.

        s = act(conv1x1(x));  y = bn2(act(conv3x3_d2(bn1(act(conv3x3(s))))));  out = s + y
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv3 = nn.Conv2d(cout, cout, 3, dilation=2, padding=2)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.leaky_relu(self.conv1(x))
        y = self.bn1(F.leaky_relu(self.conv2(s)))
        return s + self.bn2(F.leaky_relu(self.conv3(y)))


class SalsaResBlock(nn.Module):
    """SalsaNext's residual block without pooling or dropout, as the last block of RangeViT's stem
    (valeoai/rangevit models/stems.py ResBlock(pooling=False, drop_out=False)):

        s = act(conv1x1(x)); a1 = bn1(act(conv3x3(x))); a2 = bn2(act(conv3x3_d2(a1)));
        a3 = bn3(act(conv2x2_d2(a2))); out = s + bn4(act(conv1x1([a1, a2, a3])))
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 1)
        self.conv2 = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv3 = nn.Conv2d(cout, cout, 3, dilation=2, padding=2)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv4 = nn.Conv2d(cout, cout, 2, dilation=2, padding=1)
        self.bn3 = nn.BatchNorm2d(cout)
        self.conv5 = nn.Conv2d(cout * 3, cout, 1)
        self.bn4 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.leaky_relu(self.conv1(x))
        a1 = self.bn1(F.leaky_relu(self.conv2(x)))
        a2 = self.bn2(F.leaky_relu(self.conv3(a1)))
        a3 = self.bn3(F.leaky_relu(self.conv4(a2)))
        return s + self.bn4(F.leaky_relu(self.conv5(torch.cat([a1, a2, a3], dim=1))))


class ConvActBN(nn.Sequential):
    """Conv (with bias) -> LeakyReLU(0.01) -> BatchNorm, the order of RangeViT's decoder blocks."""

    def __init__(self, cin: int, cout: int, k: int = 3):
        super().__init__(nn.Conv2d(cin, cout, k, padding=(k - 1) // 2), nn.LeakyReLU(), nn.BatchNorm2d(cout))
