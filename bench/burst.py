"""200 commands in one burst across 50 containers to ``berth agent`` as a process (the workload
lives in tests/kits/burst.py, which the fault suite also runs with assertions).

    .venv/bin/python bench/burst.py
"""

from __future__ import annotations

import kitpath  # noqa: F401
from kits.benchkit import print_rows
from kits.burst import run

if __name__ == "__main__":
    print_rows("Burst", run())
