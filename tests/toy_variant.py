"""A variant defined outside the suite, to show what adding one takes: this file, plus one
registry line (the last line). Run it with ``pytest bench -p toy_variant --variant toy``.

``toy``: inference of the family's model with its weights rounded to bfloat16 and back, a
stand-in for a real compression technique."""

from __future__ import annotations

import torch
from torch import nn

from workloads.context import CaseContext
from workloads.registry import VARIANTS
from workloads.variants import InferVariant


class Toy(InferVariant):
    name = "toy"

    def prepare(self, ctx: CaseContext, model: nn.Module) -> nn.Module:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).float())
        return model


VARIANTS["toy"] = Toy
