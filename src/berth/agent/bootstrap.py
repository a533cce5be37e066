"""``berth init`` (crane's ``init``, the init container of the platform's Kubernetes manifest):
load the configuration (a usable token is required), make sure the credential namespace exists
and the agent's private key is stored, then exit. Idempotent: a second run writes nothing.

Nothing here prints a token or the key; the fingerprint is public.
"""

from __future__ import annotations

from berth.agent.credentials import KEY_FILE, AgentKey
from berth.agent.tokens import TokenKeeper
from berth.runtimes.base import CredentialStore
from berth.settings import AgentSettings


def initialize(settings: AgentSettings, store: CredentialStore) -> list[str]:
    """What was done, one line each. Raises ``NoToken`` without a usable token (before anything
    is written) and ``berth.errors.BerthError`` when the store cannot be read or written."""
    keeper = TokenKeeper.select(store, settings.connection.grpc_token, skew_s=settings.connection.iat_skew_s)
    lines = [f"token for node {keeper.current.sub} of {keeper.current.iss} ({keeper.current.type})"]
    ensure_namespace = getattr(store, "ensure_namespace", None)
    where = getattr(store, "where", lambda: str(settings.data_dir))()
    if ensure_namespace is not None:
        namespace = settings.kubernetes.secret_namespace
        lines.append(f"namespace {namespace} " + ("created" if ensure_namespace() else "exists"))
    had_key = store.read(KEY_FILE) is not None
    key = AgentKey.load_or_create(store)
    state = "kept" if had_key else "created"
    lines.append(f"private key {state} in {where} (fingerprint {key.fingerprint})")
    return lines
