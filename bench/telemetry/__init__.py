"""Telemetry sampled around a timed benchmark window.

``with Sampler(device) as s: ...`` samples, on a background daemon thread, every
``interval_s`` seconds:

- on ``cuda`` devices, through NVML: device memory used, this process tree's GPU memory,
  power, GPU utilization, SM clock, temperature, throttle reasons; the total-energy counter
  is read when the window opens and closes. The peak memory reported is the CUDA caching
  allocator's (``torch.cuda.max_memory_allocated``), because NVML's figure includes the CUDA
  context and the allocator's cache.
- on ``cpu``: the resident set size and CPU time of the whole process tree (the root process
  and all its descendants, e.g. distributed ranks), and RAPL package energy where readable.

- on every device: contention, i.e. whether other work on the machine competed with the
  benchmark: CPU time of processes outside the session's process tree, the VM's steal time,
  and (cuda) foreign compute processes on the GPUs; see :mod:`bench.telemetry.contention`.

A source that cannot be read is reported as absent (``None``) with the reason, never as 0.
After the ``with`` block, ``s.result`` holds a :class:`TelemetryResult`.

Sample timing: the window's opening and closing readings are taken on the caller's thread
when it enters and leaves; between them the thread samples at ``t0 + k * interval_s`` for
k = 1, 2, ... (sleeping until each deadline, skipping deadlines it missed), so a window of
``d`` seconds ideally gets ``floor(d / interval_s)`` periodic samples: ``n_samples`` counts
those, ``requested_samples`` is that ideal count.

Modules, one per source: ``sampler`` (the context manager and its thread), ``cpu`` (the
process tree's RSS and CPU time), ``rapl``, ``nvml``, ``contention``, ``series``
(downsampling, integration) and ``result`` (:class:`TelemetryResult`).
"""

from .contention import CONTENTION_CORES, CONTENTION_STEAL_PCT, PROC_STAT, Contention
from .cpu import CHILDREN_REFRESH_S
from .nvml import MIN_ENERGY_COUNTER_WINDOW_S, THROTTLE_REASONS, decode_throttle_reasons
from .rapl import RAPL_ROOT
from .result import TelemetryResult
from .sampler import DEVICES, Sampler

__all__ = [
    "CHILDREN_REFRESH_S",
    "CONTENTION_CORES",
    "CONTENTION_STEAL_PCT",
    "DEVICES",
    "MIN_ENERGY_COUNTER_WINDOW_S",
    "PROC_STAT",
    "RAPL_ROOT",
    "THROTTLE_REASONS",
    "Contention",
    "Sampler",
    "TelemetryResult",
    "decode_throttle_reasons",
]
