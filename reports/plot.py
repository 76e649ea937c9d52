"""Scaling curves: throughput, peak memory, MFU and held-out quality against parameters, one
line per variant.

One figure per family (and per machine and world size when the input holds several), three
log-log panels in units a reader knows (samples/s, MiB, %: ``metrics.human_unit``) and a
quality panel (bits per byte for the text task, else accuracy; linear y), titled with the
family and the machine; values beyond ``PLOTTABLE`` are left out, with a note in the panel.
matplotlib is imported here only, when a plot is drawn; figures are built with
``matplotlib.figure.Figure`` and rendered by the Agg canvas (no pyplot, no GUI backend).

API::

    render_pngs(runs) -> dict[str, bytes]     # figure name -> PNG
    write_plots(runs, out_dir) -> list[Path]
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reports.load import ReportError, Result, Run, result_index
from reports.metrics import METRICS, human_unit
from reports.schema import variant_rank

PANELS = ("samples_per_s", "peak_mem_bytes", "mfu")
QUALITY = ("bits_per_byte", "accuracy")  # the quality panel: the first any result measured
# A log axis over these values, with its margins, stays within a float's range; a value
# beyond (no measurement is near) is left out of the figure and counted in a note.
PLOTTABLE = (1e-100, 1e100)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "machine"


def figure_index(runs: Sequence[Run]) -> dict[str, tuple[str, list[Result]]]:
    """Per figure (named ``family``, plus machine and world size where they vary): its
    machine's label and its results."""
    index = result_index(runs)
    show_machine = len({machine for machine, _, _ in index}) > 1
    show_world_size = len({ws for _, ws, _ in index}) > 1
    groups: dict[str, tuple[str, list[Result]]] = {}
    for (machine, world_size, _), result in sorted(index.items(), key=lambda item: item[1].order):
        name = result.family  # a name (reports.validate): safe in a file name
        if show_machine:
            name = f"{_slug(machine)}-{name}"
        if show_world_size:
            name += f"-ws{world_size}"
        groups.setdefault(name, (machine, []))[1].append(result)
    return groups


def figure_groups(runs: Sequence[Run]) -> dict[str, list[Result]]:
    """Results per figure (see ``figure_index``)."""
    return {name: results for name, (_, results) in figure_index(runs).items()}


def _points(results: list[Result], variant: str, key: str) -> tuple[list[tuple[float, float]], int]:
    """(parameters, value in human units) of a variant's results that ran and measured ``key``,
    and how many such points lie beyond ``PLOTTABLE`` (left out)."""
    factor, _ = human_unit(METRICS[key])
    points = [
        (params, value * factor)
        for r in results
        if r.variant == variant
        and (params := r.value("params")) is not None
        and (value := r.value(key)) is not None
        and params > 0
        and value > 0
    ]
    low, high = PLOTTABLE
    inside = sorted((x, y) for x, y in points if low <= x <= high and low <= y <= high)
    return inside, len(points) - len(inside)


def panels(results: list[Result]) -> tuple[str, ...]:
    """The panels of a figure: ``PANELS`` and its quality metric."""
    quality = next((key for key in QUALITY if any(r.value(key) is not None for r in results)), QUALITY[-1])
    return (*PANELS, quality)


def _draw(figure: Any, title: str, results: list[Result]) -> None:
    variants = sorted({r.variant for r in results}, key=variant_rank)
    figure.suptitle(title)
    keys = panels(results)
    for position, key in enumerate(keys, start=1):
        metric = METRICS[key]
        axes = figure.add_subplot(1, len(keys), position)
        axes.set_title(metric.label)
        axes.set_xlabel("parameters")
        _, unit = human_unit(metric)
        axes.set_ylabel(metric.label if metric.label == unit else f"{metric.label} ({unit})")
        drawn, left_out = False, 0
        for variant in variants:
            points, beyond = _points(results, variant, key)
            left_out += beyond
            if points:
                xs, ys = zip(*points, strict=True)
                axes.plot(xs, ys, marker="o", label=variant)
                drawn = True
        if left_out:
            note = f"{left_out} value(s) beyond {PLOTTABLE[0]:g}..{PLOTTABLE[1]:g} left out"
            axes.annotate(note, (0.01, 0.01), xycoords="axes fraction", fontsize="small", annotation_clip=False)
        if drawn:
            axes.set_xscale("log")
            axes.set_yscale("linear" if key in QUALITY else "log")
            axes.grid(True, which="both", alpha=0.3)
            axes.legend(fontsize="small")
        else:
            reasons = sorted({r.missing_reason(key) for r in results})
            text = "no data\n" + "\n".join(reason[:80] for reason in reasons[:3])
            axes.text(0.5, 0.5, text, ha="center", va="center", wrap=True, parse_math=False)
            axes.set_axis_off()


def render_pngs(runs: Sequence[Run], dpi: int = 100) -> dict[str, bytes]:
    """One PNG per figure group."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - matplotlib is a dependency
        raise ReportError(f"plot: matplotlib is not available ({error})") from None
    pngs: dict[str, bytes] = {}
    for name, (machine, results) in figure_index(runs).items():
        figure = Figure(figsize=(20, 4.5), layout="constrained")
        world = f", world size {results[0].world_size}" if name.endswith(f"-ws{results[0].world_size}") else ""
        _draw(figure, f"{results[0].family} on {machine}{world}", results)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi)
        pngs[name] = buffer.getvalue()
    return pngs


def write_plots(runs: Sequence[Run], out_dir: str | Path) -> list[Path]:
    """Write ``<out_dir>/<figure>.png`` for every figure; return the paths."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ReportError(f"{out}: cannot create directory ({error.strerror})") from None
    paths = []
    for name, png in render_pngs(runs).items():
        path = out / f"{name}.png"
        try:
            path.write_bytes(png)
        except OSError as error:
            raise ReportError(f"{path}: cannot write ({error.strerror or error})") from None
        paths.append(path)
    return paths
