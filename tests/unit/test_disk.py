"""Disk reasons and the image ledger's choice of what to prune (pure parts)."""

from __future__ import annotations

from berth.imageref import ImageReference
from berth.runtimes.docker.disk import enospc_failure, human_bytes
from berth.runtimes.docker.pruning import Deployed, LedgerEntry, candidates, record


def test_enospc_becomes_one_clear_reason_once() -> None:
    clear = enospc_failure("pull x:1", "failed to register layer: write /blob: no space left on device")
    assert (
        clear is not None
        and str(clear) == "pull x:1 failed: the engine's disk is full (no space left on device)"
    )
    assert enospc_failure("deploying web", str(clear)) is None
    assert enospc_failure("pull x:1", "manifest unknown") is None


def test_human_bytes() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(24 * 1024 * 1024) == "24.0 MiB"


def test_the_last_n_superseded_images_are_kept_per_workload() -> None:
    entries: list[LedgerEntry] = []
    for index in range(5):
        image = ImageReference.parse(f"r/app:t{index}")
        record(entries, [Deployed("web", image, f"sha:{index}", pulled=True)], now=float(index))
    record(entries, [Deployed("db", ImageReference.parse("r/db:1"), "sha:db", pulled=True)], now=9.0)
    current = [Deployed("web", ImageReference.parse("r/app:t4"), "sha:4", pulled=False)]
    chosen = candidates(entries, current, keep=2)
    assert [e.reference for e in chosen] == ["docker.io/r/app:t1", "docker.io/r/app:t0"]
    record(entries, current, now=10.0)
    assert next(e for e in entries if e.image_id == "sha:4").pulled_by_berth  # stays Berth's
