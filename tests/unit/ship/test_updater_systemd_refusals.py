"""The systemd self-updater refuses an install it cannot update (no ``current`` link): the update
itself, on a real install, is in tests/integration/ship/test_updater_systemd.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from berth.agent.updater_systemd import SystemdSelfUpdater
from berth.errors import UpdateRefused
from berth.settings import AgentSettings


async def test_an_install_without_the_current_link_is_refused(tmp_path: Path) -> None:
    settings = replace(AgentSettings(), systemd_prefix=tmp_path / "nothing")
    with pytest.raises(UpdateRefused, match="not a systemd install"):
        await SystemdSelfUpdater(settings).begin_update("1", 30)
