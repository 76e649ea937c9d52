"""Transformer: a GPT-style decoder (token + position embedding, pre-norm blocks of causal
multi-head self-attention through ``scaled_dot_product_attention`` and a GELU MLP, tied head).

The throughput batch is next-token prediction on random bytes (vocab 256). The accuracy task
is next-byte prediction on real text, a pinned corpus of Python sources (``workloads.text``),
scored in bits per byte on held-out files.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import FamilyConfig, Workload


@dataclasses.dataclass(frozen=True)
class TransformerConfig(FamilyConfig):
    n_layer: int
    d_model: int
    n_head: int
    vocab_size: int = 256
    seq_len: int = 128

    SIZES = {
        "xs": dict(n_layer=2, d_model=64, n_head=2),  # 0.12M
        "s": dict(n_layer=4, d_model=128, n_head=4),  # 0.84M
        "m": dict(n_layer=6, d_model=384, n_head=6),  # 10.8M
        "l": dict(n_layer=12, d_model=768, n_head=12),  # 85.3M
        "xl": dict(n_layer=20, d_model=2048, n_head=16),  # 1.01B
    }

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"transformer: d_model {self.d_model} not divisible by n_head {self.n_head}")
        if self.seq_len < 1:
            raise ValueError(f"transformer: seq_len must be >= 1, got {self.seq_len}")

    def matmul_params(self) -> int:
        """Weights that take part in a matmul per token: the blocks' Linear layers and the head."""
        return self.n_layer * 12 * self.d_model**2 + self.vocab_size * self.d_model

    def n_params(self) -> int:
        """Embeddings (the head is tied to ``wte``), per block two LayerNorms, qkv, proj and the
        MLP with their biases (12 d^2 + 13 d), and the final LayerNorm."""
        d = self.d_model
        return (self.vocab_size + self.seq_len) * d + self.n_layer * (12 * d * d + 13 * d) + 2 * d


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Widths come from the layers, not from x (-1, chunk): structured pruning may remove heads.
        B, T, _ = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_head, -1).permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
        q, k, v = qkv.unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.GELU(), nn.Linear(4 * cfg.d_model, cfg.d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.wte.weight  # tied
        self.apply(self._init_weights)
        for block in self.blocks:  # GPT-2: residual projections scaled by depth
            for proj in (block.attn.proj, block.mlp[2]):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """GPT-2's initialisation (N(0, 0.02), zero biases): PyTorch's default N(0, 1)
        embedding, tied to the head, starts with logits of std ~sqrt(d_model) and trains slowly."""
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, vocab)
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


class Transformer(Workload):
    name = "transformer"
    Config = TransformerConfig
    default_batch_size = 16
    accuracy_task = "text"
    # text budget: tokens = 4 x parameters, 60 steps at least, capped per level; 8 windows of
    # seq_len tokens a step; peak lr per size (the best of a sweep at the standard budget for
    # xs and s: 3e-3, 4e-3 / 1.5e-3, 2e-3, 3e-3, 5e-3)
    accuracy_samples_per_param = 4.0
    accuracy_min_steps = 60
    accuracy_max_steps = {"smoke": 150, "standard": 400, "full": 20000}
    accuracy_batch_size = 8
    accuracy_lr = 4e-3
    accuracy_lr_by_size = {"s": 2e-3, "m": 1e-3, "l": 5e-4, "xl": 2.5e-4}
    accuracy_eval_every = 25

    cfg: TransformerConfig

    @property
    def seq_len(self) -> int:  # type: ignore[override]
        return self.cfg.seq_len

    def build_model(self) -> nn.Module:
        return GPT(self.cfg)

    def synthetic_batch(self, batch_size, device, generator):
        shape = (batch_size, self.cfg.seq_len + 1)
        tokens = torch.randint(0, self.cfg.vocab_size, shape, generator=generator).to(device)
        return tokens[:, :-1], tokens[:, 1:]

    def loss(self, output, target):
        return F.cross_entropy(output.flatten(0, 1).float(), target.flatten())

    def train_flops_per_sample(self) -> int:
        """PaLM's count per token, 6N + 12*L*d*T (N: matmul weights), times seq_len."""
        c = self.cfg
        per_token = 6 * c.matmul_params() + 12 * c.n_layer * c.d_model * c.seq_len
        return per_token * c.seq_len

    def infer_flops_per_sample(self) -> int:
        """The forward third of the training count: 2N + 4*L*d*T per token, times seq_len."""
        c = self.cfg
        return (2 * c.matmul_params() + 4 * c.n_layer * c.d_model * c.seq_len) * c.seq_len
