"""The ``berth`` command: picks a sub-command and hands over to the package that owns it.

Sub-packages import lazily so that ``berth health`` and ``berth agent`` never pay for the
platform's web stack, and the agent never imports an SDK its runtime does not use.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

USAGE = """usage: berth <command> [options]

commands:
  agent      run the node agent (configured from the environment, dagent-compatible)
  init       check the token, store the agent's key (and its namespace on Kubernetes) (alias: i)
  health     exit 0 when the local agent holds an accepted platform session (alias: h)
  status     each prefix's desired state against what runs here, without the platform
  version    print Berth's version and the protocol version it reports
  platform   run the embedded platform (control plane; needs berth[platform])
  ctl        the platform's client: nodes, deployments, containers, logs (needs berth[platform])
"""
EXIT_MISSING_EXTRA = 2  # like an invalid setting: the command cannot run as installed


def _version(_: Sequence[str]) -> int:
    from berth import __version__
    from berth.settings import agent_version_string

    print(f"berth {__version__} (reports {agent_version_string(__version__)})")
    return 0


def _entry(name: str) -> Callable[[Sequence[str]], int]:
    if name in ("agent", "serve"):
        from berth.agent.cli import agent_main

        return agent_main
    if name in ("init", "i"):
        from berth.agent.cli import init_main

        return init_main
    if name in ("health", "h"):
        from berth.agent.cli import health_main

        return health_main
    if name == "status":
        from berth.agent.cli import status_main

        return status_main
    if name == "version":
        return _version
    if name == "platform":
        from berth.platform.cli import main as platform_main

        return platform_main
    if name == "ctl":
        from berth.ctl.cli import main as ctl_main

        return ctl_main
    raise KeyError(name)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if args else 2
    try:
        entry = _entry(args[0])
    except ModuleNotFoundError as err:
        return _missing_extra(args[0], err)
    except KeyError:
        print(f"berth: unknown command {args[0]!r}\n\n{USAGE}", end="", file=sys.stderr)
        return 2
    try:
        return entry(args[1:])
    except ModuleNotFoundError as err:
        return _missing_extra(args[0], err)


def _missing_extra(command: str, err: ModuleNotFoundError) -> int:
    """The platform, ``ctl`` and the Kubernetes runtime come with extras (``berth[platform]``,
    ``berth[kubernetes]``), imported when first used: without them, one line naming the extra."""
    from berth.extras import missing_extra_message

    message = missing_extra_message(f"berth {command}", err)
    if message is None:
        raise err
    print(message, file=sys.stderr)
    return EXIT_MISSING_EXTRA


if __name__ == "__main__":
    sys.exit(main())
