"""The Transformer's text task: byte-level language modelling on a pinned corpus shipped with
archbench (``workloads/corpus/``), the same bytes on every machine, nothing downloaded.

The corpus is a concatenation of CPython 3.11.7 standard-library modules (PSF License, see
``workloads/corpus/README.md``). Each file starts with a header line ``# ===== Lib/<name> =====``.
The split is fixed: the files in ``TRAIN_FILES`` are the training split, the files in
``TEST_FILES`` (whole modules the model never sees) the held-out test split. The model reads
bytes (vocab 256) and is scored on ``EVAL_WINDOWS`` windows of the test split, spread evenly
over it. The training split is cut further into fit and validation by ``workloads.tasks``
(the tail of each training file is validation), from the file offsets kept here.

Rebuild the corpus (only to change it; the hash in results changes with it)::

    python -m workloads.text build /path/to/cpython-3.11/Lib
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import sys
from pathlib import Path

import torch

CORPUS_NAME = "cpython-3.11-stdlib"
CORPUS_PATH = Path(__file__).with_name("corpus") / "cpython-3.11-stdlib.txt.gz"
# fmt: off
TRAIN_FILES = (
    "argparse.py", "calendar.py", "contextlib.py", "dataclasses.py", "difflib.py", "enum.py",
    "fractions.py", "functools.py", "heapq.py", "inspect.py", "pathlib.py", "pprint.py", "random.py",
    "statistics.py", "textwrap.py", "tokenize.py", "typing.py",
)
TEST_FILES = ("datetime.py", "string.py")
# fmt: on
HEADER = "# ===== Lib/{name} =====\n"
EVAL_WINDOWS = 256  # test windows scored (each predicts seq_len bytes)


def spread_windows(data: torch.Tensor, seq_len: int, count: int, what: str) -> torch.Tensor:
    """(count, seq_len + 1) int64 windows of ``data``, their starts spread evenly over it."""
    last = len(data) - (seq_len + 1)
    if last < 0:
        raise ValueError(f"text: the {what} split ({len(data)} bytes) is shorter than a window")
    starts = torch.linspace(0, last, count).round().long()
    return data[starts[:, None] + torch.arange(seq_len + 1)].long()


@dataclasses.dataclass(frozen=True)
class TextCorpus:
    name: str
    sha256: str  # of the uncompressed corpus
    train: torch.Tensor  # (N,) uint8 bytes of the training files
    test: torch.Tensor  # (M,) uint8 bytes of the held-out test files
    train_file_starts: tuple[int, ...]  # where each training file (its header) starts in ``train``

    def eval_windows(self, seq_len: int, count: int = EVAL_WINDOWS) -> torch.Tensor:
        """(count, seq_len + 1) int64 windows of the test split, starts spread evenly."""
        return spread_windows(self.test, seq_len, count, "test")

    def train_files(self) -> list[torch.Tensor]:
        """The training split, one tensor per file (header included)."""
        bounds = (*self.train_file_starts, len(self.train))
        return [self.train[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def split_corpus(raw: bytes) -> tuple[bytes, bytes]:
    """(train, test): the test split starts at the header of the first test file."""
    marker = HEADER.format(name=TEST_FILES[0]).encode()
    at = raw.find(marker)
    if at <= 0:
        raise ValueError(f"text: corpus has no header {marker.decode().strip()!r}: not the pinned corpus")
    return raw[:at], raw[at:]


@functools.lru_cache(maxsize=2)
def load_corpus(path: str | None = None) -> TextCorpus:
    """The pinned corpus (or the gzip file at ``path``), split into train and test."""
    raw = gzip.decompress(Path(path or CORPUS_PATH).read_bytes())
    train, test = split_corpus(raw)
    starts = [train.find(HEADER.format(name=name).encode()) for name in TRAIN_FILES]
    if starts[0] != 0 or starts != sorted(starts):
        raise ValueError("text: the training files' headers are not in TRAIN_FILES order: not the pinned corpus")

    def as_tensor(b: bytes) -> torch.Tensor:
        return torch.frombuffer(bytearray(b), dtype=torch.uint8)

    sha256 = hashlib.sha256(raw).hexdigest()
    return TextCorpus(CORPUS_NAME, sha256, as_tensor(train), as_tensor(test), tuple(starts))


def build_corpus(lib_dir: Path) -> bytes:
    """The corpus from a CPython ``Lib`` directory: each file under its header, train files first."""
    parts = []
    for name in (*TRAIN_FILES, *TEST_FILES):
        parts.append(HEADER.format(name=name).encode() + (lib_dir / name).read_bytes())
    return b"".join(parts)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "build":
        print("usage: python -m workloads.text build CPYTHON_LIB_DIR", file=sys.stderr)
        return 2
    raw = build_corpus(Path(argv[1]))
    CORPUS_PATH.parent.mkdir(exist_ok=True)
    CORPUS_PATH.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    print(f"{CORPUS_PATH}: {len(raw)} bytes, sha256 {hashlib.sha256(raw).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
