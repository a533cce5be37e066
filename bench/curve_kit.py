"""What the scale curves share: the quick/full sizes, the machine they ran on, the growth read off
a curve, and the files a curve leaves (``bench/results/<curve>.json`` and ``<curve>.png``).

``bench/run_all.py --full`` sets ``BERTH_BENCH_FULL=1`` for its children; a curve run by hand
takes ``--full`` itself.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
FULL_ENV = "BERTH_BENCH_FULL"


def full_mode() -> bool:
    return os.environ.get(FULL_ENV) == "1"


def sizes(quick: Sequence[int], full: Sequence[int]) -> tuple[int, ...]:
    return tuple(full if full_mode() else quick)


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    engine = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "ram_gib": round(memory_kb / 1024 / 1024, 1),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "docker": engine or "?",
        "load_1min": round(os.getloadavg()[0], 2),
    }


def machine_text(info: dict[str, Any]) -> str:
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM; {info['kernel']}; "
        f"Python {info['python']}; Docker {info['docker']}; load {info['load_1min']} at start"
    )


def growth(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, str]:
    """The exponent k of y ~ x^k between the smallest and the largest size, and its reading.
    Fixed costs make small sizes look sub-linear; above 1.15 the cost grows faster than the size."""
    if len(xs) < 2 or ys[0] <= 0 or ys[-1] <= 0:
        return math.nan, "one point"
    k = math.log(ys[-1] / ys[0]) / math.log(xs[-1] / xs[0])
    if k < 0.85:
        return k, "sub-linear"
    if k <= 1.15:
        return k, "linear"
    return k, "worse than linear"


@dataclass
class Panel:
    title: str
    y_label: str
    series: list[tuple[str, str]]  # (key in a point, legend)
    growth_of: str | None = None  # the key whose growth is stated


@dataclass
class Curve:
    name: str
    title: str
    x_label: str
    panels: list[Panel]
    points: list[dict[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    info: dict[str, Any] = field(default_factory=machine)

    def add(self, point: dict[str, float]) -> None:
        self.points.append(point)
        print(f"{self.name}: {json.dumps(point)}", flush=True)

    def growths(self) -> dict[str, dict[str, Any]]:
        xs = [p["size"] for p in self.points]
        found: dict[str, dict[str, Any]] = {}
        for panel in self.panels:
            if panel.growth_of is None:
                continue
            ys = [p[panel.growth_of] for p in self.points]
            exponent, reading = growth(xs, ys)
            found[panel.growth_of] = {"exponent": round(exponent, 3), "reading": reading}
        return found

    @property
    def stem(self) -> str:
        return self.name if full_mode() else f"{self.name}-quick"

    def save(self) -> None:
        """``results/<name>.json`` and ``.png`` (the README's, from a full run); a quick run
        writes ``<name>-quick.*`` beside them and leaves the full run's as they are."""
        RESULTS.mkdir(exist_ok=True)
        record = {
            "curve": self.name,
            "title": self.title,
            "mode": "full" if full_mode() else "quick",
            "machine": self.info,
            "seconds": round(time.monotonic() - self.started, 1),
            "points": self.points,
            "growth": self.growths(),
            "notes": self.notes,
        }
        (RESULTS / f"{self.stem}.json").write_text(json.dumps(record, indent=2) + "\n")
        self._plot()

    def _plot(self) -> None:
        try:
            import matplotlib
        except ModuleNotFoundError:
            raise SystemExit(
                f"{self.name}: the figures are in results/{self.stem}.json; the plot needs matplotlib: "
                "pip install -c constraints.txt -e '.[bench]' (make bench installs it)"
            ) from None

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        xs = [p["size"] for p in self.points]
        figure, axes = plt.subplots(1, len(self.panels), figsize=(4.6 * len(self.panels), 3.9), squeeze=False)
        growths = self.growths()
        for axis, panel in zip(axes[0], self.panels, strict=True):
            for key, legend in panel.series:
                axis.plot(xs, [p[key] for p in self.points], marker="o", label=legend)
            title = panel.title
            if panel.growth_of in growths:
                found = growths[panel.growth_of]
                title += f"\n(growth: {found['reading']}, k={found['exponent']})"
            axis.set_title(title, fontsize=9)
            axis.set_xlabel(self.x_label, fontsize=8)
            axis.set_ylabel(panel.y_label, fontsize=8)
            axis.set_ylim(bottom=0)
            axis.set_xticks(xs)
            axis.tick_params(labelsize=7)
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7)
        figure.suptitle(f"{self.title}  [{'full' if full_mode() else 'quick'} run]", fontsize=10)
        figure.text(0.01, 0.01, machine_text(self.info), fontsize=6.5, color="dimgray")
        figure.tight_layout(rect=(0, 0.04, 1, 0.95))
        figure.savefig(RESULTS / f"{self.stem}.png", dpi=110)
        plt.close(figure)


def measure(
    curve: Curve,
    quick: Sequence[int],
    full: Sequence[int],
    point: Callable[[int], Awaitable[dict[str, float]]],
) -> tuple[dict[str, float], int]:
    """Every point of the run's sizes, the curve saved: its last point and that point's size."""
    for size in sizes(quick, full):
        curve.add(asyncio.run(point(size)))
    curve.save()
    last = curve.points[-1]
    return last, int(last["size"])


def parse_full(argv: Sequence[str]) -> None:
    """A curve run by hand: ``--full`` for the full sizes."""
    if "--full" in argv:
        os.environ[FULL_ENV] = "1"
