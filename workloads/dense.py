"""Dense: a multi-layer perceptron on flattened 32x32 images."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .base import FamilyConfig, Workload, linear_infer_flops, linear_params, linear_train_flops


@dataclasses.dataclass(frozen=True)
class DenseConfig(FamilyConfig):
    width: int
    depth: int  # hidden layers
    in_features: int = 32 * 32
    n_classes: int = 10

    SIZES = {
        "xs": dict(width=96, depth=2),  # 0.11M
        "s": dict(width=512, depth=3),  # 1.06M
        "m": dict(width=2048, depth=3),  # 10.5M
        "l": dict(width=4096, depth=6),  # 88.1M
        "xl": dict(width=8192, depth=16),  # 1.02B
    }

    def __post_init__(self) -> None:
        if self.width < 1 or self.depth < 1:
            raise ValueError(f"dense: width and depth must be >= 1, got {self.width}, {self.depth}")

    def layer_dims(self) -> list[tuple[int, int]]:
        dims = [self.in_features] + [self.width] * self.depth + [self.n_classes]
        return list(zip(dims[:-1], dims[1:], strict=True))

    def n_params(self) -> int:
        return linear_params(self.layer_dims())


class MLP(nn.Module):
    def __init__(self, cfg: DenseConfig):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (d_in, d_out) in enumerate(cfg.layer_dims()):
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(d_in, d_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 32, 32) -> (B, 10)
        return self.net(x)


class Dense(Workload):
    name = "dense"
    Config = DenseConfig
    default_batch_size = 256
    accuracy_lr = 1e-3  # xs..m measured; l and xl by analogy. The budget rule and caps are Workload's
    accuracy_lr_by_size = {"l": 5e-4, "xl": 2e-4}

    cfg: DenseConfig

    def build_model(self) -> nn.Module:
        return MLP(self.cfg)

    def synthetic_batch(self, batch_size, device, generator):
        x = torch.rand(batch_size, 1, 32, 32, generator=generator).to(device)
        y = torch.randint(0, self.cfg.n_classes, (batch_size,), generator=generator).to(device)
        return x, y

    def train_flops_per_sample(self) -> int:
        return linear_train_flops(self.cfg.layer_dims(), first_needs_input_grad=False)

    def infer_flops_per_sample(self) -> int:
        return linear_infer_flops(self.cfg.layer_dims())
