"""``berth agent`` exactly as ``python -m berth agent`` runs it (the real CLI and its signal
handling), except that the memory runtime's deploys take ``SLOW_DEPLOY_S`` seconds: a long
in-flight deploy for process-level signal tests."""

from __future__ import annotations

import os
import sys

from berth.cli import main
from berth.runtimes import memory

_original_init = memory.MemoryRuntime.__init__


def _slow_init(self: memory.MemoryRuntime) -> None:
    _original_init(self)
    self.deploy_delay_s = float(os.environ["SLOW_DEPLOY_S"])


memory.MemoryRuntime.__init__ = _slow_init  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(["agent"]))
