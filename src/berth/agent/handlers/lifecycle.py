"""Token and life-cycle commands: ``replaceToken`` (§4.3), ``update`` (§13.2) and ``close`` (§13.3).

None of them needs the runtime: this handler exists from the start, so a fresh install's
``replaceToken`` swaps the token without building the runtime and its SDK. The self-updater (the
Docker one loads the SDK) is built when ``update`` or ``close(SELF_DESTRUCT)`` first needs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from berth.agent.commands import Close, ReplaceToken, Update
from berth.agent.ports import Lifecycle, PlatformLink
from berth.agent.tokens import PendingReplacement, TokenKeeper
from berth.errors import BerthError, PlatformError, TokenError, UpdateRefused
from berth.model import CloseReason
from berth.runtimes.base import SelfScaler, SelfUpdater

log = structlog.get_logger("berth.agent.lifecycle")


def _sentence(text: str) -> str:
    """The reference upper-cases the first letter of AbortUpdate errors."""
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class LifecycleHandler:
    keeper: TokenKeeper
    link: PlatformLink
    lifecycle: Lifecycle
    updater: Callable[[], Awaitable[SelfUpdater | None]]  # built on first need; None: no self-update
    scaler: SelfScaler | None = None

    async def _swap_token(self, raw: str) -> PendingReplacement:
        """Validate, stage the file, TokenReplaced with the old token, then commit and switch.
        On failure nothing is written and the old token stays in use."""
        # The credential store may be a Kubernetes Secret (an API call): off the loop.
        pending = await asyncio.to_thread(self.keeper.prepare_replacement, raw)
        try:
            await self.link.token_replaced()
        except BaseException:
            pending.discard()
            raise
        await asyncio.to_thread(pending.commit)
        return pending

    async def replace_token(self, command: ReplaceToken) -> str:
        try:
            await self._swap_token(command.token)
        except TokenError as err:
            log.error("replace_token_rejected", reason=str(err))
            return "rejected"
        except PlatformError as err:
            log.error("token_replaced_failed", error=str(err))
            return "failed"
        log.info("token_replaced", token_type=self.keeper.current.type)
        return "replaced"

    async def update(self, command: Update) -> str:
        updater = await self.updater()
        if updater is None:
            await self.link.abort_update("Self-update is not supported by this agent")
            return "aborted"
        try:
            await self._swap_token(command.token)
        except (TokenError, PlatformError) as err:
            await self.link.abort_update(_sentence(f"update failed: {err}"))
            return "aborted"
        try:
            await updater.begin_update(command.tag, command.timeout_s)
        except (UpdateRefused, BerthError) as err:
            await self.link.abort_update(_sentence(str(err)))
            return "aborted"
        log.info("update_started", tag=command.tag, timeout_s=command.timeout_s)
        return "started"

    async def close(self, command: Close) -> str:
        match command.reason:
            case CloseReason.SHUTDOWN:
                await self._scale_down_self()
                self.lifecycle.request_exit(0, "the platform sent close(SHUTDOWN)")
                return "shutdown"
            case CloseReason.REVOKE_TOKEN:
                await asyncio.to_thread(self.keeper.revoke)
                self.lifecycle.request_exit(0, "the platform revoked the token")
                return "revoked"
            case CloseReason.SELF_DESTRUCT:
                updater = await self.updater()
                if updater is not None and await updater.self_destruct():
                    self.lifecycle.request_exit(0, "replaced by the updated agent")
                    return "self_destructed"
                log.info("self_destruct_ignored", reason="no update pending")
                return "ignored"
            case CloseReason.CLOSE | CloseReason.UNSPECIFIED:
                return "ignored"

    async def _scale_down_self(self) -> None:
        """On Kubernetes, scale the agent's own Deployment to 0 first so it is not restarted; a
        failure is logged and the agent exits 0 anyway (the platform asked it to stop)."""
        if self.scaler is None:
            return
        try:
            await self.scaler.scale_down_self()
        except BerthError as err:
            reason = str(err)
        except Exception as err:  # an unexpected client failure must not turn SHUTDOWN into a crash
            reason = f"{type(err).__name__}: {err}"
        else:
            return
        log.error(
            "self_scale_down_failed", reason=reason, consequence="the orchestrator may start the agent again"
        )
