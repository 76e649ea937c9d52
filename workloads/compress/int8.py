"""int8 quantization of a trained model, by the paths that pay on each device.

- CPU: ``quantize_static_int8``, PT2E static quantization (``torch.export`` -> torchao's ``prepare_pt2e`` with
  ``X86InductorQuantizer`` -> calibration -> ``convert_pt2e`` -> ``torch.compile`` with frozen weights). The
  one int8 path measured faster than eager fp32 on an AVX2 CPU (1.65-2.15x at batch 256, 0.6x at batch 1).
- Any device: ``quantize_weight_only_int8``, torchao's ``Int8WeightOnlyConfig`` in eager mode: 4x smaller
  weights, fp32 accuracy, but on CPU slower than fp32 (0.65-0.96x: it dequantizes on every call).
- CUDA: ``quantize_dynamic_int8``, torchao's ``Int8DynamicActivationInt8WeightConfig`` then ``torch.compile``.
  Refused on CPU, where ``torch._int_mm`` has no fast AVX2 path (0.02-0.2x, pytorch/ao#4365).

Process-wide side effects (run each variant in its own process, and the fp32 baseline in another):
importing torchao's x86 quantizer installs a pre-grad pass in ``torch._inductor.config``;
``quantize_static_int8`` sets ``torch._inductor.config.freezing = True`` for the rest of the process.
torchao and the quantizer are imported inside the functions that need them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import nn

from ..base import Unsupported
from ..cpu_features import has_vnni

Inputs = tuple[torch.Tensor, ...]


def _as_inputs(batch: torch.Tensor | Inputs) -> Inputs:
    return (batch,) if isinstance(batch, torch.Tensor) else tuple(batch)


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def quantize_static_int8(
    model: nn.Module,
    example_inputs: torch.Tensor | Inputs,
    calibration_batches: Iterable[torch.Tensor | Inputs],
    reduce_range: bool | None = None,
    dynamic_batch: bool = False,
    compile: bool = True,
    dynamic_seq: bool = False,
) -> nn.Module:
    """PT2E static int8 (activations and weights) for x86 CPUs; returns the compiled, warmed-up module.

    ``example_inputs`` fixes the traced shapes: ``torch.export`` specializes on the batch size unless
    ``dynamic_batch`` is set, so pass a batch of the size that will be timed and calibrate with batches of
    that size (another size fails with a guard error). ``reduce_range`` defaults to ``not has_vnni()``:
    without VNNI the compiled u8 x s8 kernel saturates (12.8% max relative error against 2.75%).

    The first call compiles (tens of seconds for a small MLP on one core); it is made here, on
    ``example_inputs`` under ``torch.inference_mode``. ``model`` itself is left unchanged. Side effects on the
    process: see the module docstring. ``model_bytes`` of the result counts the int8 constants the graph uses.
    """
    if _device_of(model).type != "cpu":
        raise Unsupported("int8 static (PT2E with X86InductorQuantizer) is for CPUs; on CUDA use quantize_dynamic_int8")
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    example = _as_inputs(example_inputs)
    reduce_range = (not has_vnni()) if reduce_range is None else reduce_range
    dynamic_shapes = None
    if dynamic_batch or dynamic_seq:  # ``dynamic_seq``: dim 1 up to the example's (a token sequence)
        dims = {0: torch.export.Dim("batch", min=1)} if dynamic_batch else {}
        if dynamic_seq:
            dims[1] = torch.export.Dim("seq", min=1, max=example[0].shape[1])
        dynamic_shapes = tuple(dict(dims) for _ in example)
    was_training = model.training
    model.eval()
    try:
        exported = torch.export.export(model, example, dynamic_shapes=dynamic_shapes).module()
    finally:
        model.train(was_training)
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(reduce_range=reduce_range))
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for batch_inputs in calibration_batches:
            prepared(*_as_inputs(batch_inputs))
    converted = convert_pt2e(prepared)
    if not compile:
        return converted
    torch._inductor.config.freezing = True  # weights become constants: int8 packing at compile time
    compiled = torch.compile(converted)
    with torch.inference_mode():
        compiled(*example)
    return compiled


class StaticBatches:
    """Calls the module compiled for the input's batch size. A static int8 graph runs only the
    shapes it was exported at, and a dynamic-batch graph is slow on CPU (inductor leaves the
    fused int8 kernels out: batch-1 latency measured 60 ms against 9 ms for fp32 on dense-m), so
    each timed size gets its own graph; any other batch (accuracy evaluation) runs in chunks of
    the largest size, the last one padded with copies of its final row and the padding dropped."""

    def __init__(self, by_batch: dict[int, Callable[..., torch.Tensor]]):
        self.by_batch = dict(by_batch)
        self.largest = max(self.by_batch)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        n = inputs[0].shape[0]
        if n in self.by_batch:
            return self.by_batch[n](*inputs)
        big, outs = self.by_batch[self.largest], []
        for start in range(0, n, self.largest):
            chunk = [x[start : start + self.largest] for x in inputs]
            k = chunk[0].shape[0]
            if k < self.largest:
                chunk = [torch.cat([x, x[-1:].expand(self.largest - k, *x.shape[1:])]) for x in chunk]
            outs.append(big(*chunk)[:k])
        return torch.cat(outs)


def _tied_groups(model: nn.Module) -> list[list[tuple[nn.Module, str]]]:
    """(module, parameter name) places that share one Parameter, for each Parameter used more than once."""
    places: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            places.setdefault(id(p), []).append((module, name))
    return [group for group in places.values() if len(group) > 1]


def quantize_weight_only_int8(model: nn.Module, include_embeddings: bool = True, inplace: bool = False) -> nn.Module:
    """torchao int8 weight-only, per output channel; returns the quantized model (a copy unless ``inplace``), eager.

    Linear layers, and Embedding tables when ``include_embeddings`` (their rows are quantized the same way;
    a small model's embeddings are a large share of its bytes). Weights tied before stay tied: the quantized
    Parameter of the first place is shared with the others, as the fp32 one was. Passes
    ``set_inductor_config=False`` so torchao leaves the process's inductor settings alone.
    """
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    model = model if inplace else copy.deepcopy(model)
    kinds = (nn.Linear, nn.Embedding) if include_embeddings else (nn.Linear,)
    tied = _tied_groups(model)
    quantize_(model, Int8WeightOnlyConfig(set_inductor_config=False), filter_fn=lambda m, _: isinstance(m, kinds))
    for (first, first_name), *others in tied:
        shared = getattr(first, first_name)
        for module, name in others:
            setattr(module, name, shared)
    return model


def quantize_dynamic_int8(model: nn.Module, compile: bool = True, inplace: bool = False) -> nn.Module:
    """CUDA: torchao int8 dynamic activations x int8 weights on the Linear layers, then ``torch.compile``.

    Returns the compiled module (or the quantized one when ``compile`` is False); ``model`` is quantized in
    place only with ``inplace``. Refused on CPU, where
    the int8 matmul has no fast kernel without VNNI/AMX and measured 0.02-0.2x fp32.
    """
    if _device_of(model).type != "cuda":
        raise Unsupported(
            "int8 dynamic (torchao Int8DynamicActivationInt8WeightConfig) is for CUDA: on CPU torch._int_mm "
            "measured 0.02-0.2x fp32 (pytorch/ao#4365); use quantize_static_int8 there"
        )
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    model = model if inplace else copy.deepcopy(model)
    quantize_(model, Int8DynamicActivationInt8WeightConfig(set_inductor_config=True))
    return torch.compile(model, mode="max-autotune") if compile else model
