"""Callback commands (answered within the platform's 5 s window) and fire-and-forget container
commands (§9-§12). Failures raise; the dispatcher turns them into ``CommandError``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import structlog

from berth.agent.commands import (
    ContainerCommand,
    ContainerLogs,
    DeleteContainers,
    Inspect,
    LegacyDelete,
    ListSecrets,
)
from berth.agent.handlers.streams import fit_log_list
from berth.agent.ports import MAX_MESSAGE_BYTES, PlatformLink
from berth.errors import PermanentCommandError
from berth.model import ContainerOperation, LogGap, PrefixTarget
from berth.runtimes.base import Runtime

NO_TARGET: Final = "no target container or prefix"

log = structlog.get_logger("berth.agent.callbacks")


@dataclass(frozen=True)
class CallbackHandler:
    """One runtime call each, answered on the command's callback (container commands: no answer)."""

    runtime: Runtime
    link: PlatformLink
    public_key: str

    async def list_secrets(self, command: ListSecrets) -> str:
        keys = await self.runtime.secret_keys(command.target)
        await self.link.secret_list(command.target, self.public_key, keys)
        return "answered"

    async def delete_containers(self, command: DeleteContainers) -> str:
        target = command.target
        if target is None or (isinstance(target, PrefixTarget) and not target.prefix):
            raise PermanentCommandError(NO_TARGET)
        if not isinstance(target, PrefixTarget) and not target.name:
            raise PermanentCommandError(NO_TARGET)
        outcome = await self.runtime.delete(target)
        if outcome.notes:
            log.info("delete_notes", notes=list(outcome.notes))
        await self.link.containers_deleted(target)
        return "answered"

    async def inspect(self, command: Inspect) -> str:
        data = await self.runtime.inspect(command.ref)
        size = len(data.encode("utf-8"))
        if size > MAX_MESSAGE_BYTES:
            raise PermanentCommandError(
                f"inspect output is {size} bytes, over the platform's 4 MiB message limit"
            )
        await self.link.container_inspect(command.ref, data)
        return "answered"

    async def container_log(self, command: ContainerLogs) -> str:
        lines: list[str] = []
        dropped = 0
        async for item in self.runtime.logs(command.ref, follow=False, tail_lines=command.tail_lines):
            if isinstance(item, LogGap):
                dropped += item.dropped_lines
            else:
                lines.append(item)
        if dropped:
            lines.insert(0, f"[berth: {dropped} log lines dropped]\n")
        await self.link.container_log(command.ref, fit_log_list(lines))
        return "answered"

    async def container_command(self, command: ContainerCommand) -> str:
        match command.operation:
            case ContainerOperation.START:
                await self.runtime.start(command.ref)
            case ContainerOperation.STOP:
                await self.runtime.stop(command.ref)
            case ContainerOperation.RESTART:
                await self.runtime.restart(command.ref)
            case ContainerOperation.UNSPECIFIED:
                log.warning("container_command_ignored", reason="unspecified operation")
                return "ignored"
        return "done"

    async def legacy_delete(self, command: LegacyDelete) -> str:
        await self.runtime.delete(command.ref)
        return "done"
