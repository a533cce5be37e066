"""Puts tests/ on the import path, so the benchmarks use the suite's kits package (the fake
platform, the agent as a process, the long-run workloads) as the tests do. Import it first."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = str(Path(__file__).resolve().parent.parent / "tests")
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
