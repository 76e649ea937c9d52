"""DeepSpeed ZeRO variants, registered into ``VARIANTS`` when this module imports.

Spelling: ``zero1``, ``zero2``, ``zero3`` and ``zero3-offload`` train in fp32 (fp32 parameters,
gradients and AdamW state, like ``fp32``); a ``+bf16`` or ``+fp16`` suffix turns on DeepSpeed's
mixed precision (16-bit parameters and gradients, fp32 master weights and AdamW state: the
ZeRO paper's setting), e.g. ``zero2+bf16``; ``ZERO_VARIANTS`` holds every spelling for the
registry. ``import deepspeed`` happens only when a variant is checked or built, so a machine
without it lists the variants and skips them with the reason.

Measured model state (``DeepSpeedTrainer.model_state_bytes``) is counted from the engine's own
tensors, deduplicated by storage: parameters (the flat parameter buffer of stages 1 and 2, the
``ds_tensor`` partitions of stage 3), gradients (``param.grad`` until DeepSpeed reduces them,
the reduced gradient partitions, the fp32 gradient partition the optimizer steps on) and
optimizer state (the fp32 master partition, AdamW's ``exp_avg`` and ``exp_avg_sq``). It is the
peak over one instrumented training step (the second, when AdamW's state exists), sampled
after every gradient accumulation in backward, at the end of backward, just before the inner
optimizer steps, and after the step. Reduce buckets and the layers stage 3 gathers for the
moment are the paper's temporary buffers, not model state; they show in ``peak_mem_bytes``.

Predictions, Ψ parameters, N ranks, b bytes per parameter and gradient in the compute dtype
(2 for bf16/fp16, 4 for fp32):

- ``paper_state_bytes``: the ZeRO paper (Rajbhandari et al. 2020, sec. 5.1), mixed-precision
  AdamW with K = 12 bytes of fp32 optimizer state (master copy, m, v): stage 1
  ``4Ψ + 12Ψ/N``, stage 2 ``2Ψ + 14Ψ/N``, stage 3 ``16Ψ/N``. Its fp32 form has no master copy
  (the parameters are fp32 already, K = 8): ``8Ψ + 8Ψ/N``, ``4Ψ + 12Ψ/N``, ``16Ψ/N``.
- ``zero_state_bytes`` (``model_state_bytes_predicted``): the same accounting for what
  DeepSpeed's implementation keeps, checked against the engine: (1) an fp32 master partition
  even when the model is fp32, so K = 12 always; (2) the optimizer steps on an fp32 gradient
  partition (4Ψ/N) made at the step (DeepSpeed's own estimators count it as "4_grads_32bit");
  (3) stage 3 also keeps its gradient partition buffer in the compute dtype (bΨ/N) through the
  step. Gradients peak either at the end of backward or at the step:
  stage 1 ``bΨ + max(bΨ, 4Ψ/N) + 12Ψ/N``, stage 2 ``bΨ + max(bΨ/N, 4Ψ/N) + 12Ψ/N``,
  stage 3 ``(2b + 16)Ψ/N``. For +bf16, stage 1 equals the paper's figure; stage 2 is 2Ψ/N and
  stage 3 4Ψ/N above it. One more difference is not in any formula: at the end of backward a
  stage-2 rank holds the gradient of every parameter that overlaps its partition in full, so it
  can exceed its share by up to one parameter tensor (much for a model of a few large layers).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from .base import Unsupported
from .state import PeakMeter, StateBytes, count_storages
from .variants import LossFn, TrainVariant

STAGES: dict[str, tuple[int, bool]] = {  # name -> (ZeRO stage, offload to CPU memory)
    "zero1": (1, False),
    "zero2": (2, False),
    "zero3": (3, False),
    "zero3-offload": (3, True),
}
PRECISIONS: dict[str, torch.dtype] = {"": torch.float32, "+bf16": torch.bfloat16, "+fp16": torch.float16}
INSTALL_HINT = "pip install archbench[deepspeed]"
# Reduce / all-gather bucket of at most this many elements (DeepSpeed's default is 5e8, which
# on a GPU allocates 1-2 GB of buffers whatever the model size).
MAX_BUCKET_ELEMENTS = 50_000_000


# --------------------------------------------------------------------------------------
# Predictions


def _check_formula_args(stage: int, n_params: int, world_size: int, compute_bytes: int) -> None:
    if stage not in (1, 2, 3):
        raise ValueError(f"ZeRO stage must be 1, 2 or 3, got {stage}")
    if n_params < 0 or world_size < 1 or compute_bytes not in (2, 4):
        raise ValueError(
            f"need n_params >= 0, world_size >= 1, compute_bytes 2 or 4; got {n_params}, {world_size}, {compute_bytes}"
        )


def paper_state_bytes(stage: int, n_params: int, world_size: int, compute_bytes: int) -> int:
    """The ZeRO paper's model-state bytes per rank (mixed precision: K = 12; fp32: K = 8)."""
    _check_formula_args(stage, n_params, world_size, compute_bytes)
    psi, n, b = n_params, world_size, compute_bytes
    k = 12 if b == 2 else 8
    params = b * psi / n if stage == 3 else b * psi
    grads = b * psi / n if stage >= 2 else b * psi
    return round(params + grads + k * psi / n)


def zero_state_bytes(stage: int, n_params: int, world_size: int, compute_bytes: int) -> int:
    """Model-state bytes per rank that DeepSpeed's ZeRO implementation holds at its peak."""
    _check_formula_args(stage, n_params, world_size, compute_bytes)
    psi, n, b = n_params, world_size, compute_bytes
    optimizer = 12 * psi / n  # fp32 master partition + AdamW m, v
    step_grads = 4 * psi / n  # the fp32 gradient partition the optimizer steps on
    if stage == 1:
        return round(b * psi + max(b * psi, step_grads) + optimizer)
    if stage == 2:
        return round(b * psi + max(b * psi / n, step_grads) + optimizer)
    return round(b * psi / n + b * psi / n + step_grads + optimizer)


# --------------------------------------------------------------------------------------
# Counting what the engine holds


def _tensors(obj) -> Iterator[torch.Tensor]:
    """Tensors in ``obj``: a tensor, or nested lists, tuples and dict values of them."""
    if obj is None:
        return
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def held_state(engine, moment: str = "") -> StateBytes:
    """What ``engine`` (a DeepSpeedEngine with a ZeRO optimizer) holds now, by kind."""
    opt = engine.optimizer
    inner = getattr(opt, "optimizer", opt)
    params = [p for p in engine.module.parameters()]
    stage3 = hasattr(opt, "fp32_partitioned_groups_flat")
    buckets = [t for b in (getattr(opt, "ipg_buckets", None) or {}).values() for t in _tensors(b.buffer)]
    if stage3:
        # the partitions; a gathered p.data is a per-layer temporary buffer
        param_t = [p.ds_tensor for p in params if hasattr(p, "ds_tensor")]
        param_t += list(_tensors(getattr(opt, "fp16_partitioned_groups_flat", None)))
        masters = list(_tensors(opt.fp32_partitioned_groups_flat))
        grad_t = [getattr(opt, "grad_partitions_flat_buffer", None)]
        grad_t += list(_tensors(getattr(opt, "_DeepSpeedZeroOptimizer_Stage3__param_id_to_grad_partition", None)))
        grad_t += list(_tensors(getattr(opt, "averaged_gradients", None)))
    else:
        param_t = [p.data for p in params] + list(_tensors(getattr(opt, "bit16_groups_flat", None)))
        masters = list(_tensors(getattr(opt, "single_partition_of_fp32_groups", None)))
        grad_t = [p.grad for p in params] + [getattr(p, "grad_accum", None) for p in params]
        grad_t += list(_tensors(getattr(opt, "averaged_gradients", None)))
        grad_t += list(_tensors(getattr(opt, "all_grad_tensors", None)))
        grad_t += [getattr(opt, "grads_in_partition", None)]
    grad_t += [m.grad for m in masters]
    states = [v for s in inner.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    got = count_storages(
        {"params": param_t, "grads": [g for g in grad_t if g is not None], "optimizer": masters + states},
        exclude=buckets,
    )
    return StateBytes(got["params"], got["grads"], got["optimizer"], moment)


def state_meter(engine) -> PeakMeter:
    """A PeakMeter of what ``engine`` holds through one step (the inner optimizer's step too)."""
    inner = getattr(engine.optimizer, "optimizer", None)
    optimizer = inner if isinstance(inner, torch.optim.Optimizer) else None
    return PeakMeter(lambda moment: held_state(engine, moment), engine.module.parameters(), optimizer)


# --------------------------------------------------------------------------------------
# The engine


def import_deepspeed(name: str, device: torch.device):
    """``import deepspeed`` with the accelerator that matches ``device``, or Unsupported."""
    want = "cuda" if device.type == "cuda" else device.type
    if device.type == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # read once, when deepspeed picks it
        # without LOCAL_SIZE, the CPU accelerator's device_count() runs `numactl --hardware`
        # on every call, and ZeRO-3 calls it every step (~4 ms each here). The ranks' own count
        # wins over one inherited from the process that started them (a case's parent had set 1).
        local = os.environ.get("LOCAL_WORLD_SIZE")
        if local is not None:
            os.environ["LOCAL_SIZE"] = local
        else:
            os.environ.setdefault("LOCAL_SIZE", "1")
    try:
        import deepspeed
        from deepspeed.accelerator import get_accelerator
    except ImportError as e:
        raise Unsupported(f"{name}: deepspeed is not installed ({INSTALL_HINT}): {e}") from None
    except Exception as e:  # a broken install fails in many ways; say which
        raise Unsupported(f"{name}: deepspeed failed to import: {e!r}") from None
    got = get_accelerator().device_name()
    if got != want:
        raise Unsupported(
            f"{name}: DeepSpeed's accelerator is {got!r} but the device is {device}; "
            f"set DS_ACCELERATOR={want} before starting"
        )
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    return deepspeed


# DeepSpeed's CPU backend compiles its shared-memory collectives (the ``deepspeed_shm_comm`` op)
# with ninja the first time it starts on a machine: about 4 minutes on 2 cores. Inside a case
# that build would count against --case-timeout, so the session builds it first (``set_up``).
COMM_OP = "deepspeed_shm_comm"
COMM_OP_BUILD_TIMEOUT_S = 1800


# With every rank on this machine (LOCAL_SIZE, set above, equals the world size; one rank too),
# DeepSpeed's CPU backend maps a 66 MiB shared-memory buffer per rank for its collectives, named
# by user, master address, port and rank, and never unlinks it (its ``shared_close`` is never
# called): each case at 2 ranks left 132 MiB of RAM-backed /dev/shm behind for good, and a
# nightly's leftovers add up until /dev/shm is full. Once every rank has mapped every other's
# (``deepspeed.initialize`` has returned on all of them), each rank unlinks its own
# (``release_shm_buffer``): the mappings stay, the names go, and the memory goes with the last
# rank's exit however the case ends. Ranks killed before that leave theirs: the supervisor removes
# a case's after its ranks are gone, and a ZeRO set-up removes those no live process maps.
SHM_DIR = Path("/dev/shm")
SHM_BUFFER = "deepspeed_allreduce_buffer"


def shm_buffer_path(addr: str, port: int | str, rank: int | str) -> Path:
    """Where DeepSpeed puts the buffer of ``rank`` of the process group at ``addr:port`` (each
    part may be a glob pattern)."""
    return SHM_DIR / f"{SHM_BUFFER}_{os.getuid()}_{addr}_{port}_{rank}"


def shm_buffers(addr: str, port: int | str, rank: int | None = None) -> list[Path]:
    """DeepSpeed's shared-memory buffers of the process group at ``addr:port`` (one rank's, or all)."""
    return sorted(SHM_DIR.glob(shm_buffer_path(addr, port, "*" if rank is None else rank).name))


def own_shm_buffers(rank: int) -> list[Path]:
    """This process's group's buffers of ``rank``: DeepSpeed names them by this environment's master."""
    return shm_buffers(os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", ""), rank)


def release_shm_buffer(device: torch.device, world_size: int) -> None:
    """After ``deepspeed.initialize`` (on every rank, in step): unlink this rank's buffer once every
    rank is past it. The barrier is one more collective at each ZeRO start, on every rank alike."""
    import torch.distributed as dist

    if device.type != "cpu":
        return  # only DeepSpeed's CPU backend makes them
    if world_size > 1:
        dist.barrier()
    for path in own_shm_buffers(dist.get_rank()):
        path.unlink(missing_ok=True)


def shm_buffers_in_maps(maps: str) -> set[str]:
    """The DeepSpeed buffers a ``/proc/PID/maps`` text names (`` (deleted)`` after an unlinked one)."""
    return {line.split(maxsplit=5)[-1] for line in maps.splitlines() if SHM_BUFFER in line}


def mapped_shm_buffers() -> set[str]:
    """The paths of DeepSpeed buffers that a live process maps (that this user may read)."""
    mapped: set[str] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            mapped |= shm_buffers_in_maps(maps.read_text())
        except OSError:  # gone, or another user's
            continue
    return mapped


ORPHAN_MIN_AGE_S = 60  # a buffer is created and mapped within microseconds; older and unmapped: orphaned


def unmapped_shm_buffers(addr: str, port: int | str, min_age_s: float | None = None) -> list[tuple[Path, int]]:
    """The group's buffers (``addr`` and ``port`` may be ``*``) that no live process maps (and
    older than ``min_age_s``, if given), and their sizes: left by ranks killed before they
    unlinked them."""
    mapped, now = mapped_shm_buffers(), time.time()
    found = []
    for path in shm_buffers(addr, port):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        if (min_age_s is None or now - st.st_mtime > min_age_s) and str(path) not in mapped:
            found.append((path, st.st_size))
    return found


def remove_unmapped_shm_buffers(addr: str, port: int | str) -> int:
    """Unlink the group's buffers that no live process maps (a session that took the port since
    keeps its own); how many there were."""
    found = unmapped_shm_buffers(addr, port)
    for path, _ in found:
        path.unlink(missing_ok=True)
    return len(found)


# Every DeepSpeed start takes torch's file lock on the op's build directory (to check the build
# is current), and a build may take minutes; a process killed meanwhile (a case's watchdog)
# leaves the lock behind, and every later start waits on it for ever. A lock older than this is
# such a leftover.
STALE_LOCK_S = 600


BUILD_FAILED: dict[str, str] = {}  # op -> why its build failed in this process


def comm_op_dir() -> Path:
    """The op's build directory in torch's extension cache (``TORCH_EXTENSIONS_DIR``)."""
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory(COMM_OP, verbose=False))


def comm_op_built() -> bool:
    return (comm_op_dir() / f"{COMM_OP}.so").exists()


def stale_comm_op_lock() -> Path | None:
    """The build directory's lock when a killed process left it (older than STALE_LOCK_S)."""
    lock = comm_op_dir() / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return None
    return lock if age > STALE_LOCK_S else None


# The module that builds the op, as `t`. import_module, not `import deepspeed.comm.torch as t`:
# that reads the attribute `torch` of deepspeed.comm, which is torch itself once deepspeed.comm
# has imported it (every build then failed with "module 'torch' has no attribute 'build_shm_op'").
IMPORT_COMM_MODULE = "import importlib; t = importlib.import_module('deepspeed.comm.torch')"


def build_comm_op() -> None:
    """Build DeepSpeed's CPU comm op in a child process (DeepSpeed picks its accelerator once per
    process); RuntimeError with the build's last line when it fails."""
    code = f"{IMPORT_COMM_MODULE}; assert t.build_shm_op() is not None, 'op not compatible here'"
    env = os.environ | {"DS_ACCELERATOR": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=COMM_OP_BUILD_TIMEOUT_S
    )
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        raise RuntimeError(f"building DeepSpeed's {COMM_OP} op failed: {lines[-1]}")


def ensure_process_group(device: torch.device, world_size: int) -> None:
    """DeepSpeed needs torch.distributed; at world size 1 this process becomes a 1-rank group."""
    import torch.distributed as dist

    if dist.is_initialized():
        if dist.get_world_size() != world_size:
            raise Unsupported(f"world size {world_size}: the process group has {dist.get_world_size()} ranks")
        return
    if world_size > 1:
        raise Unsupported(f"world size {world_size}: torch.distributed is not initialized")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    os.environ.setdefault("LOCAL_RANK", "0")  # DeepSpeed asserts it is set


def largest_layer_params(model: nn.Module) -> int:
    """Parameters of the module that owns the most directly (DeepSpeed's "largest layer")."""
    return max((sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()), default=0)


class DeepSpeedTrainer:
    """AdamW training through a DeepSpeed engine at ZeRO ``stage``; implements ``Trainer``."""

    MEASURE_AT_STEP = 2  # AdamW creates its state in the first step: measure the second

    def __init__(
        self,
        variant: Zero,
        model: nn.Module,
        loss_fn: LossFn,
        lr: float,
        device: torch.device,
        world_size: int,
    ):
        deepspeed = import_deepspeed(variant.name, device)
        ensure_process_group(device, world_size)
        self.variant = variant
        self.loss_fn = loss_fn
        self.dtype = variant.compute_dtype
        self.n_params = sum(p.numel() for p in model.parameters())
        self.largest_layer = largest_layer_params(model)
        bucket = int(min(MAX_BUCKET_ELEMENTS, max(self.n_params, 1)))
        zero: dict = {
            "stage": variant.stage,
            "contiguous_gradients": True,
            "reduce_bucket_size": bucket,
            "allgather_bucket_size": bucket,
        }
        if variant.stage == 3:
            # DeepSpeed keeps parameters under 1e5 elements whole on every rank by default;
            # at the sizes benchmarked here that would be most of them. Partition them all,
            # as the paper's formula assumes.
            zero |= {
                "stage3_param_persistence_threshold": 0,
                "stage3_model_persistence_threshold": 0,
                "stage3_prefetch_bucket_size": bucket,
            }
        if variant.offload:
            zero |= {"offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}}
        config: dict = {
            "train_micro_batch_size_per_gpu": 1,  # only DeepSpeed's bookkeeping: batches come from the case
            "gradient_accumulation_steps": 1,
            "zero_optimization": zero,
            "zero_allow_untested_optimizer": True,
            "gradient_clipping": 0.0,  # DeepSpeed clips at 1.0 by default; the fp32 variant does not clip
            "steps_per_print": 2**62,
            "wall_clock_breakdown": False,
            "bf16": {"enabled": self.dtype is torch.bfloat16},
            "fp16": {"enabled": self.dtype is torch.float16, "initial_scale_power": 16},
        }
        optimizer = None
        if variant.offload:  # DeepSpeedCPUAdam steps the offloaded state; same hyperparameters
            config["optimizer"] = {
                "type": "AdamW",
                "params": {"lr": lr, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01},
            }
        else:  # the same optimizer the fp32 variant uses
            optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        self.engine, *_ = deepspeed.initialize(
            model=model, optimizer=optimizer, model_parameters=model.parameters(), config=config
        )
        release_shm_buffer(device, world_size)
        self.model: nn.Module = self.engine.module
        self.device = self.engine.device
        self.steps = 0
        self.state: StateBytes | None = None

    def _cast(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs.to(self.dtype) if inputs.is_floating_point() else inputs

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        meter = state_meter(self.engine) if self.steps == self.MEASURE_AT_STEP else None
        if meter is not None:
            meter.__enter__()
        try:
            loss = self.loss_fn(self.engine(self._cast(inputs)), targets)
            self.engine.backward(loss)
            if meter is not None:
                meter.sample("end of backward")  # gradients reduced, before the optimizer
            self.engine.step()
        finally:
            if meter is not None:
                meter.__exit__()
                self.state = meter.peak
        return loss.detach()

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        self.engine.eval()
        try:
            return self.engine(self._cast(inputs))
        finally:
            self.engine.train()

    def model_state_bytes(self) -> int:
        """Peak bytes of parameters, gradients and optimizer state held by this rank during
        the instrumented step (the state now, before that step has run)."""
        if self.state is None:
            return held_state(self.engine, "now").total
        return self.state.total

    def model_bytes(self) -> int:
        """Bytes of the whole model as saved (stage 3 holds only partitions of it)."""
        seen, total = set(), 0
        for p in self.model.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += getattr(p, "ds_numel", p.numel()) * p.element_size()
        return total + sum(b.numel() * b.element_size() for b in self.model.buffers())

    def extra_info(self) -> dict:
        """Variant keys of the result: the paper's formula, DeepSpeed's estimate, the breakdown."""
        import torch.distributed as dist

        world_size = dist.get_world_size()
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        info: dict = {
            "zero_stage": self.variant.stage,
            "model_state_bytes_paper": self.variant.paper_state_bytes(self.n_params, world_size),
            "model_state_breakdown": self.state.as_dict() if self.state else None,
            "model_state_bytes_deepspeed_estimate": None,
        }
        estimate = self.variant.deepspeed_estimate(self.n_params, self.largest_layer, world_size, local)
        absent = {}
        if isinstance(estimate, str):
            absent["model_state_bytes_deepspeed_estimate"] = estimate
        else:
            info["model_state_bytes_deepspeed_estimate"] = estimate
        if self.state is None:
            absent["model_state_breakdown"] = f"fewer than {self.MEASURE_AT_STEP} steps ran"
        info["absent"] = absent
        return info

    def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is None:
            return
        if hasattr(engine, "destroy"):
            engine.destroy()
        inner = getattr(engine.optimizer, "optimizer", None)
        if isinstance(inner, torch.optim.Optimizer):
            inner.state.clear()


# --------------------------------------------------------------------------------------
# The variants


class Zero(TrainVariant):
    """ZeRO stage ``stage`` through DeepSpeed, in fp32 or with 16-bit mixed precision."""

    preload = ("deepspeed",)

    def __init__(self, base: str, precision: str = ""):
        if base not in STAGES or precision not in PRECISIONS:
            raise ValueError(f"zero variant: unknown {base + precision!r}")
        self.name = base + precision
        self.stage, self.offload = STAGES[base]
        self.compute_dtype = PRECISIONS[precision]

    @property
    def compute_bytes(self) -> int:
        return torch.empty((), dtype=self.compute_dtype).element_size()

    def check(self, device: torch.device, world_size: int) -> None:
        if self.offload and device.type != "cuda":
            raise Unsupported(
                f"{self.name}: offload moves optimizer state and parameters from GPU to CPU memory; "
                f"on {device} they are there already (run zero3)"
            )
        import_deepspeed(self.name, device)
        from deepspeed.accelerator import get_accelerator

        acc = get_accelerator()
        if self.compute_dtype is torch.bfloat16 and not acc.is_bf16_supported():
            raise Unsupported(f"{self.name}: DeepSpeed's {acc.device_name()} accelerator has no bfloat16 support here")
        if self.compute_dtype is torch.float16 and not acc.is_fp16_supported():
            raise Unsupported(
                f"{self.name}: DeepSpeed's {acc.device_name()} accelerator has no float16 support here "
                "(on CPUs it needs AVX512-FP16/AMX-FP16); use +bf16"
            )

    def set_up(self, device: torch.device, say: Callable[[str], None]) -> None:
        if device.type != "cpu" or importlib.util.find_spec("deepspeed") is None:
            return  # elsewhere DeepSpeed builds nothing at start; without it the cases say why
        lock = stale_comm_op_lock()
        if lock is not None:
            say(f"{self.name}: removing {lock}, left by a build that was killed (every start would wait on it)")
            lock.unlink(missing_ok=True)
        orphans = unmapped_shm_buffers("*", "*", ORPHAN_MIN_AGE_S)
        if orphans:
            mib = sum(size for _, size in orphans) / 2**20
            say(
                f"{self.name}: removing {len(orphans)} DeepSpeed buffers ({mib:.0f} MiB) in {SHM_DIR} of ranks now gone"
            )
            for path, _ in orphans:
                path.unlink(missing_ok=True)
        if comm_op_built():
            return
        if COMM_OP in BUILD_FAILED:  # every ZeRO variant shares the op: one try per process
            raise RuntimeError(BUILD_FAILED[COMM_OP])
        say(f"{self.name}: building DeepSpeed's {COMM_OP} op once for this machine (minutes)")
        try:
            build_comm_op()
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            BUILD_FAILED[COMM_OP] = str(e)
            raise RuntimeError(str(e)) from None

    def trainer(self, model, loss_fn, lr, device, world_size):
        return DeepSpeedTrainer(self, model, loss_fn, lr, device, world_size)

    def predicted_state_bytes(self, n_params: int, world_size: int) -> int:
        return zero_state_bytes(self.stage, n_params, world_size, self.compute_bytes)

    def paper_state_bytes(self, n_params: int, world_size: int) -> int:
        return paper_state_bytes(self.stage, n_params, world_size, self.compute_bytes)

    def deepspeed_estimate(
        self, n_params: int, largest_layer: int, world_size: int, local_world_size: int
    ) -> int | str:
        """DeepSpeed's own estimator of model-state bytes per rank, or the reason it has none."""
        if self.compute_dtype is torch.float32:
            return "DeepSpeed's estimators assume 16-bit parameters and gradients (use +bf16/+fp16)"
        if self.stage == 1:
            return "DeepSpeed has no ZeRO-1 estimator"
        nodes = max(world_size // max(local_world_size, 1), 1)
        if self.stage == 2:
            from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

            cpu, gpu = estimate_zero2_model_states_mem_needs(
                n_params, local_world_size, nodes, cpu_offload=self.offload, additional_buffer_factor=1.0
            )
        else:
            from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

            cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
                n_params, largest_layer, local_world_size, nodes, cpu_offload=self.offload,
                cpu_offload_params=self.offload, additional_buffer_factor=1.0,
            )  # fmt: skip
        return gpu + (cpu // local_world_size if self.offload else 0)


# every stage in fp32 and with each 16-bit precision: ``zero1`` ... ``zero3-offload+fp16``
ZERO_VARIANTS = {b + p: functools.partial(Zero, b, p) for b in STAGES for p in PRECISIONS}
