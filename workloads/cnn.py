"""CNN: LeNet-5 at the base size, widened and deepened for the larger sizes.

Each stage is ``n_convs`` convolutions (ReLU) followed by 2x2 max pooling; then a stack of
fully connected layers. ``xs`` keeps LeNet-5's topology (conv 5x5 -> pool -> conv 5x5 -> pool
-> 120 -> 84 -> 10 on 32x32 input) with 8 and 20 channels instead of 6 and 16, which puts it at
the 0.1M nominal size (the original has 62K parameters).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .base import FamilyConfig, Workload, linear_infer_flops, linear_params, linear_train_flops


@dataclasses.dataclass(frozen=True)
class CNNConfig(FamilyConfig):
    stages: tuple[tuple[int, int], ...]  # (channels, convs) per stage, each followed by a 2x2 pool
    fc: tuple[int, ...]
    kernel: int = 5
    padding: int = 0
    in_channels: int = 1
    image: int = 32
    n_classes: int = 10

    SIZES = {
        "xs": dict(stages=((8, 1), (20, 1)), fc=(120, 84)),  # 75K, LeNet-5 topology
        "s": dict(stages=((32, 1), (64, 1)), fc=(512, 256)),  # 1.01M
        "m": dict(stages=((64, 2), (128, 2), (256, 2)), fc=(2048, 512), kernel=3, padding=1),  # 10.6M
        "l": dict(stages=((128, 2), (256, 2), (512, 3)), fc=(8192, 2048), kernel=3, padding=1),  # 91M
        "xl": dict(stages=((256, 2), (512, 2), (1024, 3)), fc=(32768, 12288), kernel=3, padding=1),  # 0.97B
    }

    def __post_init__(self) -> None:
        if self.conv_shapes()[-1][3] < 1:
            raise ValueError(f"cnn: {len(self.stages)} stages shrink a {self.image}px image to nothing")

    def conv_shapes(self) -> list[tuple[int, int, int, int]]:
        """(c_in, c_out, out_hw, out_hw_after_pool) of every convolution."""
        shapes, c_in, hw = [], self.in_channels, self.image
        for c_out, n in self.stages:
            for _ in range(n):
                hw = hw + 2 * self.padding - self.kernel + 1
                shapes.append((c_in, c_out, hw, hw))
                c_in = c_out
            hw //= 2
            shapes[-1] = (*shapes[-1][:3], hw)
        return shapes

    def flat_features(self) -> int:
        return self.stages[-1][0] * self.conv_shapes()[-1][3] ** 2

    def fc_dims(self) -> list[tuple[int, int]]:
        dims = [self.flat_features(), *self.fc, self.n_classes]
        return list(zip(dims[:-1], dims[1:], strict=True))

    def n_params(self) -> int:
        convs = sum(c_in * c_out * self.kernel**2 + c_out for c_in, c_out, _, _ in self.conv_shapes())
        return convs + linear_params(self.fc_dims())


class ConvNet(nn.Module):
    def __init__(self, cfg: CNNConfig):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = cfg.in_channels
        for c_out, n in cfg.stages:
            for _ in range(n):
                layers += [nn.Conv2d(c_in, c_out, cfg.kernel, padding=cfg.padding), nn.ReLU()]
                c_in = c_out
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        fc: list[nn.Module] = [nn.Flatten()]
        for i, (d_in, d_out) in enumerate(cfg.fc_dims()):
            if i:
                fc.append(nn.ReLU())
            fc.append(nn.Linear(d_in, d_out))
        self.classifier = nn.Sequential(*fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 32, 32) -> (B, 10)
        return self.classifier(self.features(x))


class CNN(Workload):
    name = "cnn"
    Config = CNNConfig
    default_batch_size = 64
    accuracy_lr = 3e-3
    accuracy_lr_by_size = {"m": 1e-3, "l": 5e-4, "xl": 2e-4}  # deeper 3x3 stacks take smaller steps

    cfg: CNNConfig

    def build_model(self) -> nn.Module:
        return ConvNet(self.cfg)

    def synthetic_batch(self, batch_size, device, generator):
        c = self.cfg
        x = torch.rand(batch_size, c.in_channels, c.image, c.image, generator=generator).to(device)
        y = torch.randint(0, c.n_classes, (batch_size,), generator=generator).to(device)
        return x, y

    def train_flops_per_sample(self) -> int:
        k2 = self.cfg.kernel**2
        total = 0
        for i, (c_in, c_out, hw, _) in enumerate(self.cfg.conv_shapes()):
            mm = 2 * c_in * c_out * k2 * hw * hw
            total += 3 * mm if i else 2 * mm  # the first conv computes no input gradient
        return total + linear_train_flops(self.cfg.fc_dims(), first_needs_input_grad=True)

    def infer_flops_per_sample(self) -> int:
        k2 = self.cfg.kernel**2
        convs = sum(2 * c_in * c_out * k2 * hw * hw for c_in, c_out, hw, _ in self.cfg.conv_shapes())
        return convs + linear_infer_flops(self.cfg.fc_dims())
