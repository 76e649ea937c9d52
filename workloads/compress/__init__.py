"""Compression transforms: each takes a trained model and returns a smaller or faster one.

Applied after training; the model families know nothing of them. Importing this package imports neither
torchao nor torch_pruning: the functions that need them import them when called.

- ``int8``: ``quantize_static_int8`` (PT2E, CPU), ``quantize_weight_only_int8`` (torchao, eager),
  ``quantize_dynamic_int8`` (torchao, CUDA)
- ``prune``: ``prune_structured`` (torch-pruning: layers shrink), ``prune_unstructured`` (zeros)
- ``lowrank``: ``factorize_linear`` (truncated SVD), ``choose_rank`` (by validation score)
- ``distill``: ``hinton_loss``, ``student_config``
- ``size``: ``model_bytes`` (the bytes a compressed model computes with)
- ``stats``: ``mcnemar``, ``meets`` (MLPerf's 99% / 99.9% targets)
"""

from .distill import hinton_loss, student_config
from .int8 import quantize_dynamic_int8, quantize_static_int8, quantize_weight_only_int8
from .lowrank import choose_rank, factorize_linear
from .prune import prune_structured, prune_unstructured
from .size import model_bytes
from .stats import MLPERF_TARGETS, mcnemar, meets

__all__ = [
    "MLPERF_TARGETS",
    "choose_rank",
    "factorize_linear",
    "hinton_loss",
    "mcnemar",
    "meets",
    "model_bytes",
    "prune_structured",
    "prune_unstructured",
    "quantize_dynamic_int8",
    "quantize_static_int8",
    "quantize_weight_only_int8",
    "student_config",
]
