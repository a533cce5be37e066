"""Every Berth benchmark in one run, one table: figure | Berth | floor | ratio | target.

* the Docker runtime's benchmarks: every bench/docker_*.py with a ``run()`` returning rows;
* agent start-up (bench/agent_startup.py, read from its output);
* soak, log flood and burst (tests/kits/soak.py, tests/kits/burst.py), with the agent as a process;
* reconnect after platform outages and a 200-agent herd (bench/reconnect.py, reconnect_herd.py);
* the scale curves (every bench/curve_*.py with a ``run()``): small sizes in the default
  ``--quick`` run, the full sizes with ``--full``; each writes bench/results/<curve>.json and .png
  (``<curve>-quick.*`` in a quick run).

Each benchmark runs in its own process with a time limit; the default run is sized for CI (about
5 minutes on 2 cores, never more than ``--budget``, 570 s); ``--long`` soaks for 10 minutes and
floods for 2. A job stopped at its limit prints where its threads were. The table is also written
to bench/results/summary-<run>.md and .json. Needs the test engine and registry:

    eval "$(tools/testenv.sh env)"; .venv/bin/python bench/run_all.py [--quick | --full] [--long]
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import json
import os
import platform
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent / "tests")]  # the benchmarks, and the suite's kits

from kits.benchkit import RUN_ENV, Row, remove_run  # noqa: E402

Job = tuple[str, Callable[[], list[Row]]]
JOB_TIMEOUT_S = 180.0  # one benchmark in the CI run; a hung one is stopped, the rest still run
FULL_CURVE_TIMEOUT_S = 2400.0  # one full curve (the 500-workload deployment alone takes minutes)
RESULTS = BENCH / "results"


def docker_jobs(pattern: str = "docker_*.py") -> list[Job]:
    jobs: list[Job] = []
    for path in sorted(BENCH.glob(pattern)):
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

    full = os.environ.get("BERTH_BENCH_FULL") == "1"
    soak_s, flood_s = (600.0, 120.0) if long else (60.0, 20.0) if full else (30.0, 10.0)
    runs, idle_s = (5, 60.0) if long else (3, 10.0)
    return {
        **dict(docker_jobs()),
        "agent_startup": lambda: startup_rows(runs, idle_s),
        "soak+flood": lambda: soak.run(soak_s, flood_s),
        "burst": burst.run,
        "platform_scale": platform_scale.run,
        "reconnect": lambda: reconnect.run(full=long or full),
        "reconnect_herd": lambda: reconnect_herd.run(png=BENCH / "results" / "reconnect_herd.png"),
        **dict(docker_jobs("curve_*.py")),
    }


def run_job(name: str, long: bool, timeout_s: float) -> int:
    """Child mode: run one benchmark, its rows as one JSON line last on stdout. Just before the
    parent's limit, every thread's stack goes to stderr and the child exits: a hang says where."""
    faulthandler.dump_traceback_later(max(1.0, timeout_s - 5.0), exit=True)
    rows = jobs(long)[name]()
    print(json.dumps(rows))
    return 0


def run_in_child(name: str, long: bool, timeout_s: float) -> list[Row]:
    """Each benchmark in its own process, so a hung one is stopped and the run stays bounded."""
    command = [sys.executable, str(Path(__file__).resolve()), "--job", name, "--job-timeout", str(timeout_s)]
    if long:
        command.append("--long")
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s + 10, check=False)
    if result.returncode != 0:
        if "Timeout (" in result.stderr:  # faulthandler's dump: the stacks, from the first line
            stacks = result.stderr[result.stderr.index("Timeout (") :]
            print(f"{name}: stopped at its time limit; its threads were:\n{stacks[:6000]}", file=sys.stderr)
            raise subprocess.TimeoutExpired(command, timeout_s)
        raise RuntimeError(f"exit {result.returncode}: {result.stderr.strip()[-300:]}")
    return [tuple(row) for row in json.loads(result.stdout.strip().splitlines()[-1])]  # type: ignore[misc]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--long", action="store_true", help="10 min soak, 2 min flood, 5 start-up runs")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small curve sizes (the default)")
    mode.add_argument("--full", action="store_true", help="the full curve sizes (by hand: about 20 minutes)")
    parser.add_argument("--only", help="run only the jobs whose name contains this text")
    parser.add_argument("--budget", type=float, default=570.0, help="the whole run's bound in seconds")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--job-timeout", type=float, default=JOB_TIMEOUT_S, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.full:
        os.environ["BERTH_BENCH_FULL"] = "1"  # the children read it (bench/curve_kit.py)
    if args.job:
        return run_job(args.job, args.long, args.job_timeout)
    os.environ.setdefault(RUN_ENV, secrets.token_hex(4))  # the children label their containers
    budget = (
        args.budget if not (args.long or args.full) else max(args.budget, 3600.0 * (2 if args.full else 1))
    )
    started = time.monotonic()
    rows, problems = run_jobs(args, budget, started)
    total = time.monotonic() - started
    kind = "full" if args.full else "long" if args.long else "quick (CI)"
    print(f"Berth benchmarks ({kind} run, {total:.0f} s) on {machine()}")
    print()
    print_table(rows)
    for problem in problems:
        print(f"! {problem}")
    if not args.only:  # a partial run leaves the last whole run's summary as it is
        write_summary(kind, total, rows, problems)
    return 1 if problems else 0


def run_jobs(args: argparse.Namespace, budget: float, started: float) -> tuple[list[Row], list[str]]:
    """Every selected job in its own child process, within the budget: rows and problems."""
    rows: list[Row] = []
    problems: list[str] = []
    for name in jobs(args.long):
        if args.only and args.only not in name:
            continue
        left = budget - (time.monotonic() - started)
        if left < 10:
            problems.append(f"{name}: skipped, the {budget:.0f} s budget was spent")
            continue
        print(f"[{budget - left:5.0f} s] {name} ...", file=sys.stderr, flush=True)
        try:
            limit = JOB_TIMEOUT_S * (6 if args.long else 1)
            if args.full and name.startswith("curve_"):
                limit = FULL_CURVE_TIMEOUT_S
            rows += run_in_child(name, args.long, timeout_s=min(left, limit))
        except subprocess.TimeoutExpired:
            problems.append(f"{name}: stopped after its time limit")
        except Exception as err:
            problems.append(f"{name}: failed ({type(err).__name__}: {err})")
        if problems and problems[-1].startswith(f"{name}:"):
            left_behind = remove_run(os.environ[RUN_ENV])  # a stopped job could not clean up
            if left_behind:
                print(f"{name}: removed {left_behind} containers it left", file=sys.stderr)
    return rows, problems


def print_table(rows: list[Row]) -> None:
    print(f"| {'figure':<52} | {'Berth':>10} | {'floor':>10} | {'ratio':>6} | target")
    print(f"|{'-' * 54}|{'-' * 12}|{'-' * 12}|{'-' * 8}|{'-' * 22}")
    for figure, berth, floor, ratio, target in rows:
        floor_text = f"{floor:10.3f}" if floor else f"{'-':>10}"
        ratio_text = f"{ratio:6.3f}" if ratio else f"{'-':>6}"
        print(f"| {figure:<52} | {berth:10.3f} | {floor_text} | {ratio_text} | {target}")


def write_summary(kind: str, total: float, rows: list[Row], problems: list[str]) -> None:
    """bench/results/summary-<run>.md and .json: the table above, with the machine it ran on."""
    RESULTS.mkdir(exist_ok=True)
    where = machine()
    lines = [
        f"Berth benchmarks, {kind} run, {total:.0f} s, on {where}; "
        f"load average {os.getloadavg()[0]:.2f} at the end.",
        "",
        "| figure | Berth | floor | ratio | target |",
        "|---|---:|---:|---:|---|",
    ]
    for figure, berth, floor, ratio, target in rows:
        floor_text = f"{floor:.3f}" if floor else "-"
        ratio_text = f"{ratio:.3f}" if ratio else "-"
        lines.append(f"| {figure} | {berth:.3f} | {floor_text} | {ratio_text} | {target} |")
    lines += [f"\n! {problem}" for problem in problems]
    (RESULTS / f"summary-{kind.split()[0]}.md").write_text("\n".join(lines) + "\n")
    record = {"run": kind, "seconds": round(total), "machine": where, "rows": rows, "problems": problems}
    (RESULTS / f"summary-{kind.split()[0]}.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
