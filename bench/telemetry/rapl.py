"""RAPL: cumulative package energy from the kernel's powercap zones."""

from __future__ import annotations

import os

#: Where the kernel's powercap (RAPL) zones live; a module attribute so tests can point it
#: to a fake tree.
RAPL_ROOT = "/sys/class/powercap"


class Rapl:
    """Cumulative package energy of the RAPL zones, with counter wraparound handled."""

    def __init__(self, zones: list[tuple[int, int]]) -> None:
        self._zones = zones  # (fd, max_energy_range_uj)
        self._last = [self._read_uj(fd) for fd, _ in zones]
        self._total_uj = 0

    @staticmethod
    def _read_uj(fd: int) -> int:
        return int(os.pread(fd, 32, 0))

    @classmethod
    def open(cls, root: str | None = None) -> Rapl | str:
        """The package zones under ``root`` (default :data:`RAPL_ROOT`), or the reason there
        are none to read."""
        root = RAPL_ROOT if root is None else root
        try:
            names = sorted(
                n
                for n in os.listdir(root)
                if n.startswith("intel-rapl:") and n.count(":") == 1  # packages, not subzones
            )
        except OSError:
            names = []
        zone_dirs = []
        for name in names:
            try:
                with open(os.path.join(root, name, "name")) as f:
                    if not f.read().startswith("package"):
                        continue  # e.g. "psys", which would double-count
            except OSError:
                pass
            zone_dirs.append(os.path.join(root, name))
        if not zone_dirs:
            return f"no {root}/intel-rapl:* package zones on this machine"
        zones: list[tuple[int, int]] = []
        for zone in zone_dirs:
            path = os.path.join(zone, "energy_uj")
            try:
                with open(os.path.join(zone, "max_energy_range_uj")) as f:
                    max_range = int(f.read())
                fd = os.open(path, os.O_RDONLY)
                int(os.pread(fd, 32, 0))
            except PermissionError:
                for fd, _ in zones:
                    os.close(fd)
                return f"permission denied reading {path} (RAPL counters are root-only here)"
            except (OSError, ValueError) as err:
                for fd, _ in zones:
                    os.close(fd)
                return f"cannot read {path}: {err}"
            zones.append((fd, max_range))
        return cls(zones)

    def read_j(self) -> float:
        """Joules since this object was opened."""
        for i, (fd, max_range) in enumerate(self._zones):
            now = self._read_uj(fd)
            delta = now - self._last[i]
            if delta < 0:  # the counter wrapped
                delta += max_range
            self._total_uj += delta
            self._last[i] = now
        return self._total_uj / 1e6

    def close(self) -> None:
        for fd, _ in self._zones:
            os.close(fd)
        self._zones = []
