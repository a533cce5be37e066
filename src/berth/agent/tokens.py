"""Which token the agent uses: start-up selection (§4.2), refusal fallback and blacklist (§4.4),
and the crash-safe ``replaceToken`` persistence (§4.3)."""

from __future__ import annotations

import enum
import time
from dataclasses import KW_ONLY, dataclass, field

import structlog

from berth.agent.credentials import (
    BLACKLIST_FILE,
    TOKEN_FILE,
    StagedWrite,
    StagingStore,
    Token,
    check_replacement,
    parse_token,
)
from berth.errors import PersistenceError, TokenError
from berth.runtimes.base import CredentialStore

log = structlog.get_logger("berth.agent.tokens")


class NoToken(TokenError):
    """Neither the stored token nor GRPC_TOKEN is usable; the agent cannot start."""


class RefusalOutcome(enum.Enum):
    RETRY_WITH_FALLBACK = "retry_with_fallback"
    STOP_PRIMARY_REFUSED = "stop_primary_refused"  # exit 0 (reference)
    STOP_FALLBACK_REFUSED = "stop_fallback_refused"  # exit non-zero (reference)


@dataclass
class PendingReplacement:
    """A validated new token whose file is staged but not yet visible (§4.3 steps 1-4)."""

    keeper: TokenKeeper
    token: Token
    staged: StagedWrite | None

    def commit(self) -> None:
        """Called after TokenReplaced succeeded: make the file visible, then switch. The platform
        already holds the new nonce, so the agent switches even when the file cannot be written
        (the token then lives until the process ends; the error is logged)."""
        try:
            if self.staged is not None:
                self.staged.commit()
            else:
                self.keeper.store.write(TOKEN_FILE, self.token.raw)
        except PersistenceError as err:
            log.error("token_not_persisted", reason=str(err), hint="the persistence folder must be writable")
        self.keeper.current = self.token
        self.keeper.fallback = None
        self.keeper.using_fallback = False

    def discard(self) -> None:
        """TokenReplaced failed: keep the old token, leave no file behind."""
        if self.staged is not None:
            self.staged.discard()


@dataclass(eq=False)
class TokenKeeper:
    """Holds the token in use (``current``) and the install token to fall back on."""

    store: CredentialStore
    current: Token
    fallback: Token | None = None
    _: KW_ONLY
    skew_s: float = 60.0
    using_fallback: bool = field(default=False, init=False)

    @classmethod
    def select(
        cls, store: CredentialStore, env_token: str, *, skew_s: float = 60.0, now: float | None = None
    ) -> TokenKeeper:
        """§4.2: stored connection token first, GRPC_TOKEN as fallback or replacement."""
        blacklisted = (store.read(BLACKLIST_FILE) or "").strip()
        current_time = time.time() if now is None else now

        def validate(raw: str | None, source: str) -> Token | None:
            if not raw or not raw.strip():
                return None
            try:
                token = parse_token(raw, now=current_time, skew_s=skew_s)
            except TokenError as err:
                log.warning("token_unusable", source=source, reason=str(err))
                return None
            if blacklisted and token.nonce == blacklisted:
                log.warning("token_unusable", source=source, reason="its nonce was refused before")
                return None
            return token

        stored = validate(store.read(TOKEN_FILE), TOKEN_FILE)
        env = validate(env_token, "GRPC_TOKEN")
        if stored is None and env is None:
            raise NoToken("no token: neither token.jwt nor GRPC_TOKEN holds a usable token")
        if stored is None:
            assert env is not None
            return cls(store, env, skew_s=skew_s)
        if env is None:
            return cls(store, stored, skew_s=skew_s)
        if stored.iss != env.iss:
            log.warning("token_platform_changed", stored_iss=stored.iss, env_iss=env.iss)
            store.delete(TOKEN_FILE)
            return cls(store, env, skew_s=skew_s)
        if stored.raw == env.raw:
            return cls(store, stored, skew_s=skew_s)
        return cls(store, stored, env, skew_s=skew_s)

    def refused(self) -> RefusalOutcome:
        """§4.4: the platform refused ``current``."""
        token = self.current
        try:
            if token.is_install:
                self.store.write(BLACKLIST_FILE, token.nonce)
            else:
                self.store.delete(TOKEN_FILE)
        except PersistenceError as err:
            # The refusal still decides what happens next; the next start meets the refusal again.
            log.error(
                "refused_token_not_forgotten",
                reason=str(err),
                hint="the persistence folder must be writable",
            )
        if self.using_fallback:
            return RefusalOutcome.STOP_FALLBACK_REFUSED
        if self.fallback is not None:
            self.current = self.fallback
            self.fallback = None
            self.using_fallback = True
            return RefusalOutcome.RETRY_WITH_FALLBACK
        return RefusalOutcome.STOP_PRIMARY_REFUSED

    def prepare_replacement(self, raw: str) -> PendingReplacement:
        """Validate a token from ``replaceToken``/``update`` and stage its file (0600, fsync)."""
        token = parse_token(raw, skew_s=self.skew_s)
        check_replacement(self.current, token)
        staged = self.store.stage(TOKEN_FILE, token.raw) if isinstance(self.store, StagingStore) else None
        return PendingReplacement(self, token, staged)

    def revoke(self) -> None:
        """REVOKE_TOKEN: forget the connection token."""
        self.store.delete(TOKEN_FILE)
