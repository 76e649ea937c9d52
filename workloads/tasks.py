"""The accuracy tasks on real data, one interface for both: training batches, held-out batches,
the loss, and the score of a model's outputs on the held-out split.

- ``digits`` (dense, cnn): scikit-learn's handwritten digits, or MNIST from ``--data-dir``
  (``workloads.data``); scored by top-1 accuracy.
- ``text`` (transformer): next-byte prediction on the pinned corpus (``workloads.text``);
  scored by bits per byte (mean cross-entropy in bits per predicted byte, lower is better) and
  next-byte top-1 accuracy.

A family names its task in ``Workload.accuracy_task``; :func:`task_for` builds it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from .base import Workload
from .data import load_task
from .text import EVAL_WINDOWS, load_corpus

EVAL_BATCH = 256  # images per held-out batch
DIGITS_TEST = 360  # held-out digits (scikit-learn's 1,797, 20%); MNIST from --data-dir has 10,000
EVAL_TEXT_BATCH = 32  # windows per held-out batch
Batch = tuple[torch.Tensor, torch.Tensor]


class Scorer(Protocol):
    def add(self, output: torch.Tensor, target: torch.Tensor) -> None: ...

    def result(self) -> dict[str, Any]:
        """The accuracy fields, and ``_correct``: one bool per scored sample (image or byte)."""


class Task(Protocol):
    name: str
    sample_unit: str  # what one training sample is: "images" or "tokens"

    def samples_per_batch(self, batch_size: int) -> int: ...

    def train_batches(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """Endless training batches of ``batch_size`` (this rank's shard of every global batch)."""

    def eval_batches(self) -> Iterator[Batch]: ...

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...

    def scorer(self) -> Scorer: ...


# ------------------------------------------------------------------------------------------
# digits


class TopOneScorer:
    def __init__(self, class_logits: Callable[[torch.Tensor], torch.Tensor], name: str):
        self.class_logits, self.name = class_logits, name
        self.correct: list[torch.Tensor] = []

    def add(self, output: torch.Tensor, target: torch.Tensor) -> None:
        self.correct.append(self.class_logits(output).argmax(-1).cpu() == target)

    def result(self) -> dict[str, Any]:
        correct = torch.cat(self.correct)
        return {
            "accuracy": float(correct.float().mean()),
            "accuracy_metric": "top1",
            "accuracy_task": self.name,
            "bits_per_byte": None,
            "_reasons": {"bits_per_byte": f"the {self.name} task is classification: bits per byte is for text"},
            "_correct": correct,
        }


class DigitsTask:
    """Images (N, 1, 32, 32) encoded by the family (``Workload.encode_images``), 10 classes."""

    sample_unit = "images"

    def __init__(self, workload: Workload, data_dir: str | None = None):
        self.workload = workload
        data = load_task(data_dir)
        self.name = data.name
        self.x_train, self.y_train = workload.encode_images(data.x_train), data.y_train
        self.x_test, self.y_test = workload.encode_images(data.x_test), data.y_test

    def samples_per_batch(self, batch_size: int) -> int:
        return batch_size

    def train_batches(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """Epochs of seeded permutations; a new permutation when one cannot fill a global batch."""
        gen = torch.Generator().manual_seed(seed)
        n = len(self.y_train)
        if batch_size * world_size > n:
            raise ValueError(f"{self.name}: a global batch of {batch_size * world_size} exceeds {n} samples")
        order, pos = torch.randperm(n, generator=gen), 0
        while True:
            if pos + batch_size * world_size > n:
                order, pos = torch.randperm(n, generator=gen), 0
            idx = order[pos + rank * batch_size : pos + (rank + 1) * batch_size]
            pos += batch_size * world_size
            yield self.x_train[idx], self.y_train[idx]

    def eval_batches(self) -> Iterator[Batch]:
        for i in range(0, len(self.y_test), EVAL_BATCH):
            yield self.x_test[i : i + EVAL_BATCH], self.y_test[i : i + EVAL_BATCH]

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.workload.task_loss(output, target)

    def scorer(self) -> Scorer:
        return TopOneScorer(self.workload.class_logits, self.name)


# ------------------------------------------------------------------------------------------
# text


class BitsPerByteScorer:
    """Bits per byte: the mean cross-entropy of the predicted bytes in bits; and top-1."""

    def __init__(self, corpus_name: str, corpus_sha256: str):
        self.corpus_name, self.corpus_sha256 = corpus_name, corpus_sha256
        self.nll_nats = 0.0
        self.correct: list[torch.Tensor] = []

    def add(self, output: torch.Tensor, target: torch.Tensor) -> None:
        logits = output.float().flatten(0, 1).cpu()  # (B*T, vocab)
        target = target.flatten()
        self.nll_nats += float(F.cross_entropy(logits, target, reduction="sum").double())
        self.correct.append(logits.argmax(-1) == target)

    def result(self) -> dict[str, Any]:
        correct = torch.cat(self.correct)
        return {
            "accuracy": float(correct.float().mean()),
            "accuracy_metric": "next_byte_top1",
            "accuracy_task": "text",
            "bits_per_byte": self.nll_nats / len(correct) / math.log(2),
            "accuracy_corpus": self.corpus_name,
            "accuracy_corpus_sha256": self.corpus_sha256,
            "_correct": correct,
        }


class TextTask:
    """Next-byte prediction: windows of ``seq_len + 1`` bytes, the model reads the first
    ``seq_len`` and predicts each next byte. Training windows start at seeded random offsets."""

    name = "text"
    sample_unit = "tokens"

    def __init__(self, workload: Workload, seq_len: int):
        self.workload, self.seq_len = workload, seq_len
        self.corpus = load_corpus()

    def samples_per_batch(self, batch_size: int) -> int:
        return batch_size * self.seq_len

    def train_batches(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        gen = torch.Generator().manual_seed(seed)
        high = len(self.corpus.train) - (self.seq_len + 1)
        while True:
            starts = torch.randint(0, high + 1, (batch_size * world_size,), generator=gen)
            windows = self.corpus.train_windows(starts[rank * batch_size : (rank + 1) * batch_size], self.seq_len)
            yield windows[:, :-1], windows[:, 1:]  # (B, T) inputs, (B, T) next bytes

    def eval_batches(self) -> Iterator[Batch]:
        windows = self.corpus.eval_windows(self.seq_len)
        for i in range(0, len(windows), EVAL_TEXT_BATCH):
            chunk = windows[i : i + EVAL_TEXT_BATCH]
            yield chunk[:, :-1], chunk[:, 1:]

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.workload.loss(output, target)

    def scorer(self) -> Scorer:
        return BitsPerByteScorer(self.corpus.name, self.corpus.sha256)


def task_for(workload: Workload, data_dir: str | None = None) -> Task:
    """The family's accuracy task (``Workload.accuracy_task``); ``data_dir`` is MNIST for digits."""
    if workload.accuracy_task == "text":
        seq_len = workload.seq_len
        assert seq_len is not None, "a text task needs a sequence model"
        return TextTask(workload, seq_len)
    return DigitsTask(workload, data_dir)


def eval_samples(workload: Workload) -> int:
    """Held-out samples one evaluation reads (windows of seq_len for text; the digits split,
    without loading it: MNIST's is larger), for FLOP estimates before a case runs."""
    return EVAL_WINDOWS if workload.accuracy_task == "text" else DIGITS_TEST
