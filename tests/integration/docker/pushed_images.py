"""Build small images from ``local/busybox:1`` and push them to the authenticated test registry
(removed locally, so a deploy really pulls them)."""

from __future__ import annotations

import os
import subprocess
import tempfile

from docker_support import REGISTRY, REGISTRY_PASSWORD, REGISTRY_USER


def build_and_push(reference: str, dockerfile: str, *, keep_local: bool = False) -> None:
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    with tempfile.TemporaryDirectory() as config:
        env["DOCKER_CONFIG"] = config
        subprocess.run(
            ["docker", "build", "-q", "-t", reference, "-"],
            input=dockerfile.encode(),
            env=env,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["docker", "login", "-u", REGISTRY_USER, "--password-stdin", REGISTRY],
            input=REGISTRY_PASSWORD.encode(),
            env=env,
            check=True,
            capture_output=True,
        )
        subprocess.run(["docker", "push", "-q", reference], env=env, check=True, capture_output=True)
    if not keep_local:
        remove_local(reference)


def remove_local(reference: str) -> None:
    subprocess.run(["docker", "rmi", "-f", reference], check=False, capture_output=True)
