"""Before a deployment changes anything, ask the API server whether the agent's account may write
every kind of object it is about to apply (SelfSubjectAccessReview). A cluster installed with a
narrower ClusterRole (dyrector.io's own manifest grants no ``networking.k8s.io/ingresses``) then
fails the deployment at once, naming each missing permission, instead of half-way through."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from berth.runtimes.common.bridge import ThreadBridge
from berth.runtimes.kubernetes.api import KubeApi
from berth.runtimes.kubernetes.api_errors import Forbidden, Request, permission_text
from berth.runtimes.kubernetes.resources import Kind

# Server-side apply needs both: create for a new object, patch for an existing one.
APPLY_VERBS = ("create", "patch")


async def require_apply_permissions(
    api: KubeApi, bridge: ThreadBridge, targets: Iterable[tuple[Kind, str]]
) -> None:
    """Raise ``Forbidden`` naming every (verb, kind, namespace) the account lacks."""
    checks = sorted(
        {(verb, kind, ns) for kind, ns in targets for verb in APPLY_VERBS},
        key=lambda c: (c[1].plural, c[2], c[0]),
    )

    async def allowed(verb: str, kind: Kind, ns: str) -> bool:
        try:
            return bool(await bridge.call(api.can, verb, kind, ns or None))
        except Forbidden:
            return True  # the account may not even ask: the apply itself will say what is missing

    answers = await asyncio.gather(*(allowed(*check) for check in checks))
    missing = [check for check, ok in zip(checks, answers, strict=True) if not ok]
    if missing:
        names = "; ".join(permission_text(Request(verb, kind, ns or None)) for verb, kind, ns in missing)
        raise Forbidden(
            f"forbidden: the agent's service account lacks the permission to {names} "
            "(add it to the agent's ClusterRole; see the README, 'Replacing dagent or crane')"
        )
