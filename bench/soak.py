"""Soak and log flood on ``berth agent`` as a process with the real Docker runtime (the workload
lives in tests/kits/soak.py, which the fault suite also runs with assertions).

    .venv/bin/python bench/soak.py                    # 75 s soak, 20 s flood (CI size)
    .venv/bin/python bench/soak.py --seconds 1800     # by hand
"""

from __future__ import annotations

import argparse

import kitpath  # noqa: F401
from kits.benchkit import print_rows
from kits.soak import run

if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=75.0)
    parser.add_argument("--flood-seconds", type=float, default=20.0)
    args = parser.parse_args()
    print_rows("Soak and flood", run(args.seconds, args.flood_seconds))
