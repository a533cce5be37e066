"""Every Berth benchmark in one run, one table: figure | Berth | floor | ratio | target.

* the Docker runtime's benchmarks: every bench/docker_*.py with a ``run()`` returning rows;
* agent start-up (bench/agent_startup.py, read from its output);
* soak, log flood and burst (tests/kits/soak.py, tests/kits/burst.py), with the agent as a process;
* reconnect after platform outages and a 200-agent herd (bench/reconnect.py, reconnect_herd.py).

Each benchmark runs in its own process with a time limit; the default run is sized for CI (about
3-4 minutes on 2 cores, never more than ``--budget``, 570 s); ``--long`` soaks for 10 minutes and
floods for 2. Needs the test engine and registry:

    eval "$(tools/testenv.sh env)"; .venv/bin/python bench/run_all.py [--long]
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent / "tests")]  # the benchmarks, and the suite's kits

from kits.benchkit import Row  # noqa: E402

Job = tuple[str, Callable[[], list[Row]]]
JOB_TIMEOUT_S = 180.0  # one benchmark in the CI run; a hung one is stopped, the rest still run


def docker_jobs() -> list[Job]:
    jobs: list[Job] = []
    for path in sorted(BENCH.glob("docker_*.py")):
        module = importlib.import_module(path.stem)
        run = getattr(module, "run", None)
        if callable(run):
            jobs.append((path.stem, run))
    return jobs


def startup_rows(runs: int, idle_s: float) -> list[Row]:
    """bench/agent_startup.py prints its figures; read them from its output."""
    result = subprocess.run(
        [sys.executable, str(BENCH / "agent_startup.py"), "--runs", str(runs), "--idle-seconds", str(idle_s)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    text = result.stdout
    connect = re.search(r"Connect at the platform: median (\d+) ms", text)
    rss = re.search(r"idle RSS after \d+ s connected: ([\d.]+) MB", text)
    if connect is None or rss is None:
        raise RuntimeError(f"agent_startup.py printed no figures: {text[-500:]} {result.stderr[-500:]}")
    return [
        ("agent start -> Connect, median (ms)", float(connect.group(1)), 0.0, 0.0, "< 1000 ms"),
        (
            f"agent idle RSS after {idle_s:.0f} s (MB, memory runtime)",
            float(rss.group(1)),
            0.0,
            0.0,
            "< 50 MB",
        ),
    ]


def machine() -> str:
    cpu = "unknown cpu"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    cores = len(
        [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("processor")]
    )
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    docker = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return (
        f"{cpu}, {cores} cores, {memory_kb / 1024 / 1024:.1f} GiB RAM; "
        f"{platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; Docker {docker or '?'}"
    )


def jobs(long: bool) -> dict[str, Callable[[], list[Row]]]:
    import platform_scale
    import reconnect
    import reconnect_herd
    from kits import burst, soak

    soak_s, flood_s = (600.0, 120.0) if long else (60.0, 20.0)
    runs, idle_s = (5, 60.0) if long else (3, 10.0)
    return {
        **dict(docker_jobs()),
        "agent_startup": lambda: startup_rows(runs, idle_s),
        "soak+flood": lambda: soak.run(soak_s, flood_s),
        "burst": burst.run,
        "platform_scale": platform_scale.run,
        "reconnect": lambda: reconnect.run(full=long),
        "reconnect_herd": lambda: reconnect_herd.run(png=BENCH / "results" / "reconnect_herd.png"),
    }


def run_job(name: str, long: bool) -> int:
    """Child mode: run one benchmark, its rows as one JSON line last on stdout."""
    rows = jobs(long)[name]()
    print(json.dumps(rows))
    return 0


def run_in_child(name: str, long: bool, timeout_s: float) -> list[Row]:
    """Each benchmark in its own process, so a hung one is stopped and the run stays bounded."""
    command = [sys.executable, str(Path(__file__).resolve()), "--job", name]
    if long:
        command.append("--long")
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"exit {result.returncode}: {result.stderr.strip()[-300:]}")
    return [tuple(row) for row in json.loads(result.stdout.strip().splitlines()[-1])]  # type: ignore[misc]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--long", action="store_true", help="10 min soak, 2 min flood, 5 start-up runs")
    parser.add_argument("--budget", type=float, default=570.0, help="the whole run's bound in seconds")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        return run_job(args.job, args.long)
    budget = args.budget if not args.long else max(args.budget, 3600.0)
    started = time.monotonic()
    rows: list[Row] = []
    problems: list[str] = []
    for name in jobs(args.long):
        left = budget - (time.monotonic() - started)
        if left < 10:
            problems.append(f"{name}: skipped, the {budget:.0f} s budget was spent")
            continue
        print(f"[{budget - left:5.0f} s] {name} ...", file=sys.stderr, flush=True)
        try:
            rows += run_in_child(
                name, args.long, timeout_s=min(left, JOB_TIMEOUT_S * (6 if args.long else 1))
            )
        except subprocess.TimeoutExpired:
            problems.append(f"{name}: stopped after its time limit")
        except Exception as err:
            problems.append(f"{name}: failed ({type(err).__name__}: {err})")
    total = time.monotonic() - started
    print(f"Berth benchmarks ({'long' if args.long else 'CI'} run, {total:.0f} s) on {machine()}")
    print()
    print(f"| {'figure':<52} | {'Berth':>10} | {'floor':>10} | {'ratio':>6} | target")
    print(f"|{'-' * 54}|{'-' * 12}|{'-' * 12}|{'-' * 8}|{'-' * 22}")
    for figure, berth, floor, ratio, target in rows:
        floor_text = f"{floor:10.3f}" if floor else f"{'-':>10}"
        ratio_text = f"{ratio:6.3f}" if ratio else f"{'-':>6}"
        print(f"| {figure:<52} | {berth:10.3f} | {floor_text} | {ratio_text} | {target}")
    for problem in problems:
        print(f"! {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
