"""The accuracy tasks on real data, one interface for both: the splits, training batches,
held-out batches, the loss, and the score of a model's outputs.

- ``digits`` (dense, cnn): scikit-learn's handwritten digits, or MNIST from ``--data-dir``
  (``workloads.data``); scored by top-1 accuracy.
- ``text`` (transformer): next-byte prediction on the pinned corpus (``workloads.text``);
  scored by bits per byte (mean cross-entropy in bits per predicted byte, lower is better) and
  next-byte top-1 accuracy.

Splits (``SPLITS``): ``test`` is the task's held-out split (the digits test split; the text
corpus's held-out files); ``validation`` a fixed part of its training split, ``VALIDATION_FRACTION``
of it (digits: a seeded 15% of the training images; text: the last 15% of each training file,
scored on ``VALIDATION_WINDOWS`` windows spread over those tails), which choices such as a
low-rank factorization's rank are made on, never on ``test``; ``fit`` the rest of the training
split, which every model trains on.

A family names its task in ``Workload.accuracy_task``; :func:`task_for` builds it.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from .base import Workload
from .data import load_task
from .text import EVAL_WINDOWS, load_corpus, spread_windows

SPLITS = ("fit", "validation", "test")
VALIDATION_FRACTION = 0.15  # of the training split
VALIDATION_SEED = 0  # digits: the permutation that picks the validation images
VALIDATION_WINDOWS = 128  # text: validation windows scored (each predicts seq_len bytes)
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
        """Endless batches of the fit split, ``batch_size`` each (this rank's shard of every
        global batch of ``batch_size x world_size``)."""

    def eval_batches(self, split: str = "test") -> Iterator[Batch]:
        """The batches of ``split`` that a score reads, in a fixed order."""

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...

    def scored_logits(self, output: torch.Tensor, target: torch.Tensor) -> Batch:
        """(logits (N, classes), targets (N,)) of the N scored samples of a batch: the class
        scores of N images, or the next-byte logits of every position of N/seq_len windows."""

    def scorer(self) -> Scorer: ...

    def identity(self) -> dict[str, Any]:
        """What the task's data is (a hash of it, its split): a model trained on other data is another."""


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split: unknown {split!r}; allowed: {', '.join(SPLITS)}")


# ------------------------------------------------------------------------------------------
# digits


class TopOneScorer:
    def __init__(self, class_logits: Callable[[torch.Tensor], torch.Tensor], name: str):
        self.class_logits, self.name = class_logits, name
        self.correct: list[torch.Tensor] = []

    def add(self, output: torch.Tensor, target: torch.Tensor) -> None:
        self.correct.append(self.class_logits(output).argmax(-1).cpu() == target.cpu())

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


def validation_indices(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, validation) indices of a training split of ``n`` samples: a fixed seeded
    ``VALIDATION_FRACTION`` of them is validation."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(VALIDATION_SEED))
    cut = int(n * VALIDATION_FRACTION)
    return order[cut:], order[:cut]


@functools.lru_cache(maxsize=4)
def digits_sha256(data_dir: str | None) -> str:
    """A hash of the image task's data (the images and labels of both splits)."""
    data = load_task(data_dir)
    h = hashlib.sha256(data.name.encode())
    for t in (data.x_train, data.y_train, data.x_test, data.y_test):
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


class DigitsTask:
    """Images (N, 1, 32, 32) encoded by the family (``Workload.encode_images``), 10 classes."""

    sample_unit = "images"

    def __init__(self, workload: Workload, data_dir: str | None = None):
        self.workload, self.data_dir = workload, data_dir
        data = load_task(data_dir)
        self.name = data.name
        x_train = workload.encode_images(data.x_train)
        fit, validation = validation_indices(len(data.y_train))
        self.splits = {
            "fit": (x_train[fit], data.y_train[fit]),
            "validation": (x_train[validation], data.y_train[validation]),
            "test": (workload.encode_images(data.x_test), data.y_test),
        }

    def samples_per_batch(self, batch_size: int) -> int:
        return batch_size

    def train_batches(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """Epochs of seeded permutations of the fit split; a new permutation when one cannot fill
        a global batch."""
        x, y = self.splits["fit"]
        gen = torch.Generator().manual_seed(seed)
        n = len(y)
        if batch_size * world_size > n:
            raise ValueError(f"{self.name}: a global batch of {batch_size * world_size} exceeds {n} samples")
        order, pos = torch.randperm(n, generator=gen), 0
        while True:
            if pos + batch_size * world_size > n:
                order, pos = torch.randperm(n, generator=gen), 0
            idx = order[pos + rank * batch_size : pos + (rank + 1) * batch_size]
            pos += batch_size * world_size
            yield x[idx], y[idx]

    def eval_batches(self, split: str = "test") -> Iterator[Batch]:
        check_split(split)
        x, y = self.splits[split]
        for i in range(0, len(y), EVAL_BATCH):
            yield x[i : i + EVAL_BATCH], y[i : i + EVAL_BATCH]

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.workload.task_loss(output, target)

    def scored_logits(self, output: torch.Tensor, target: torch.Tensor) -> Batch:
        return self.workload.class_logits(output), target

    def scorer(self) -> Scorer:
        return TopOneScorer(self.workload.class_logits, self.name)

    def identity(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "sha256": digits_sha256(self.data_dir),
            "validation": [VALIDATION_FRACTION, VALIDATION_SEED],
        }


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
        target = target.flatten().cpu()
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


def text_splits(train_files: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, validation) bytes of the training files: the last ``VALIDATION_FRACTION`` of each
    file is validation, the rest fit (each a concatenation over the files, in their order)."""
    cuts = [len(f) - int(len(f) * VALIDATION_FRACTION) for f in train_files]
    fit = torch.cat([f[:cut] for f, cut in zip(train_files, cuts, strict=True)])
    validation = torch.cat([f[cut:] for f, cut in zip(train_files, cuts, strict=True)])
    return fit, validation


class TextTask:
    """Next-byte prediction: windows of ``seq_len + 1`` bytes, the model reads the first
    ``seq_len`` and predicts each next byte. Training windows start at seeded random offsets
    of the fit bytes."""

    name = "text"
    sample_unit = "tokens"

    def __init__(self, workload: Workload, seq_len: int):
        self.workload, self.seq_len = workload, seq_len
        self.corpus = load_corpus()
        self.fit, self.validation = text_splits(self.corpus.train_files())

    def samples_per_batch(self, batch_size: int) -> int:
        return batch_size * self.seq_len

    def train_batches(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        gen = torch.Generator().manual_seed(seed)
        high = len(self.fit) - (self.seq_len + 1)
        offsets = torch.arange(self.seq_len + 1)
        while True:
            starts = torch.randint(0, high + 1, (batch_size * world_size,), generator=gen)
            mine = starts[rank * batch_size : (rank + 1) * batch_size]
            windows = self.fit[mine[:, None] + offsets].long()
            yield windows[:, :-1], windows[:, 1:]  # (B, T) inputs, (B, T) next bytes

    def windows(self, split: str) -> torch.Tensor:
        """(count, seq_len + 1) windows that a score of ``split`` reads, spread evenly over it."""
        check_split(split)
        if split == "test":
            return self.corpus.eval_windows(self.seq_len)
        data = self.validation if split == "validation" else self.fit
        return spread_windows(data, self.seq_len, VALIDATION_WINDOWS, split)

    def eval_batches(self, split: str = "test") -> Iterator[Batch]:
        windows = self.windows(split)
        for i in range(0, len(windows), EVAL_TEXT_BATCH):
            chunk = windows[i : i + EVAL_TEXT_BATCH]
            yield chunk[:, :-1], chunk[:, 1:]

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.workload.loss(output, target)

    def scored_logits(self, output: torch.Tensor, target: torch.Tensor) -> Batch:
        return output.flatten(0, 1), target.flatten()

    def scorer(self) -> Scorer:
        return BitsPerByteScorer(self.corpus.name, self.corpus.sha256)

    def identity(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "corpus": self.corpus.name,
            "corpus_sha256": self.corpus.sha256,
            "validation": [VALIDATION_FRACTION, VALIDATION_WINDOWS],
        }


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
