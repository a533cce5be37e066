"""``berth agent`` and ``berth health``: configured from the environment (dagent-compatible)."""

from __future__ import annotations

import asyncio
import signal
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

from berth.errors import ConfigError

if TYPE_CHECKING:  # the settings module is imported late: start-up time and memory
    from berth.settings import AgentSettings

EXIT_CONFIG = 2
EXIT_FORCED = 130


def _skip_charset_detection() -> None:
    """``requests`` (under the Docker SDK) imports ``charset_normalizer`` only to guess the encoding
    of a body that declares none (``Response.apparent_encoding``): ≈2.5 MB of resident memory. The
    Docker Engine API answers JSON (UTF-8 by definition) or declares a charset, and without a
    detector requests falls back to UTF-8, so the agent leaves it out and silences the one import
    warning requests gives about it."""
    sys.modules.setdefault("charset_normalizer", None)  # type: ignore[arg-type]
    sys.modules.setdefault("chardet", None)  # type: ignore[arg-type]
    warnings.filterwarnings("ignore", message="Unable to find acceptable character detection dependency")


def _settings_or_none(command: str) -> AgentSettings | None:
    """The agent's settings, or ``None`` after one line naming the invalid setting (exit 2)."""
    from berth.settings import load_agent_settings

    try:
        return load_agent_settings()
    except ConfigError as err:
        _print_invalid(command, err)
        return None


def _print_invalid(command: str, err: ConfigError) -> None:
    print(f"berth {command}: invalid setting {err.setting}: {err.problem}", file=sys.stderr)


def _prepared(command: str, log_level: str | None = None) -> AgentSettings | None:
    """The settings with logging configured (at ``log_level``, else the configured one), or
    ``None`` as ``_settings_or_none``; for the commands that may import the SDKs."""
    _skip_charset_detection()
    settings = _settings_or_none(command)
    if settings is not None:
        from berth.logsetup import configure_logging

        configure_logging(settings.log_format, log_level or settings.log_level)
    return settings


def _asks_for_help(argv: Sequence[str], usage: str) -> bool:
    if argv and argv[0] in ("-h", "--help"):
        print(usage)
        return True
    return False


def agent_main(argv: Sequence[str]) -> int:
    """Run the node agent until the platform or a signal stops it."""
    if _asks_for_help(
        argv, "usage: berth agent\n\nConfigured from the environment (GRPC_TOKEN, DEBUG, BERTH_*)."
    ):
        return 0
    # structlog pulls in ``rich`` (when installed, e.g. as a dev tool's dependency) only for pretty
    # console tracebacks: ≈15 MB of resident memory the agent does not need. It also tries
    # ``greenlet`` and ``twisted`` for integrations the agent does not use: start-up time.
    for unused in ("rich", "greenlet", "twisted"):
        sys.modules.setdefault(unused, None)  # type: ignore[arg-type]
    settings = _prepared("agent")
    if settings is None:
        return EXIT_CONFIG
    from berth.agent.app import Agent

    agent = Agent(settings)

    async def supervise() -> int:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        assert main is not None

        signals_seen = 0

        def on_signal() -> None:
            # Only a second *signal* forces the exit: after close{SHUTDOWN} on Kubernetes the pod
            # gets one SIGTERM while the agent is already draining, and must still exit 0.
            nonlocal signals_seen
            signals_seen += 1
            if signals_seen > 1:
                main.cancel()  # second signal: no more waiting
            else:
                agent.request_shutdown()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal)
        try:
            return await agent.run()
        except ConfigError as err:
            _print_invalid("agent", err)
            return EXIT_CONFIG
        except asyncio.CancelledError:
            return EXIT_FORCED

    return asyncio.run(supervise())


def health_main(argv: Sequence[str]) -> int:
    """Exit 0 only when the local agent holds an accepted session (container HEALTHCHECK)."""
    from berth.agent.health import read_health_socket

    settings = _settings_or_none("health")
    if settings is None:
        return EXIT_CONFIG
    try:
        connected = read_health_socket(settings.health_socket)
    except (OSError, ValueError) as err:
        print(f"berth health: agent not reachable at {settings.health_socket}: {err}", file=sys.stderr)
        return 1
    print("connected" if connected else "not connected")
    return 0 if connected else 1


def init_main(argv: Sequence[str]) -> int:
    """``berth init`` (alias ``i``): crane's init step. Exit 0 when the credential namespace and
    the private key are in place; 1 with one clear message otherwise; 2 for an invalid setting."""
    usage = (
        "usage: berth init\n\nChecks the token (GRPC_TOKEN or the stored one), makes sure "
        "SECRET_NAMESPACE exists (Kubernetes) and stores the agent's private key if missing."
    )
    if _asks_for_help(argv, usage):
        return 0
    settings = _prepared("init")
    if settings is None:
        return EXIT_CONFIG
    from berth.agent.app import build_store
    from berth.agent.bootstrap import initialize
    from berth.agent.tokens import NoToken
    from berth.errors import BerthError

    store = build_store(settings)
    try:
        lines = initialize(settings, store)
    except NoToken:
        print(
            "berth init: no usable token: GRPC_TOKEN is missing or not a valid token "
            "(expired, malformed or refused before) and no stored connection token is usable",
            file=sys.stderr,
        )
        return 1
    except BerthError as err:
        print(f"berth init: {err}", file=sys.stderr)
        return 1
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()
    for line in lines:
        print(f"berth init: {line}")
    return 0


def status_main(argv: Sequence[str]) -> int:
    """``berth status``: desired vs actual state of each prefix, without the platform."""
    if _asks_for_help(
        argv, "usage: berth status\n\nDesired vs actual state of each prefix, without the platform."
    ):
        return 0
    settings = _prepared("status", log_level="error")
    if settings is None:
        return EXIT_CONFIG
    from berth.agent.status import print_status

    return asyncio.run(print_status(settings, sys.stdout, sys.stderr))
