"""The one exception tree of Berth.

SDK errors (docker, kubernetes, grpc) are translated into these at the boundary of the layer that
owns the SDK, with ``raise ... from err``. Messages never contain tokens, secret values or keys.
"""

from __future__ import annotations


class BerthError(Exception):
    """Root of every error Berth raises on purpose."""


class ConfigError(BerthError):
    """A setting is missing or invalid. The agent exits with code 2 at start."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


class SecretError(BerthError):
    """A secret value could not be decrypted with the agent's key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"secret {key!r} could not be decrypted: {problem}")
        self.key = key


class TokenError(BerthError):
    """A JWT is malformed or its claims are unacceptable (never includes the token itself)."""


class PersistenceError(BerthError):
    """The persistence folder (or secret store) could not be read or written."""


# -- talking to the platform ---------------------------------------------------------------------


class PlatformError(BerthError):
    """The platform could not be reached or answered with an error."""


class PlatformUnavailable(PlatformError):
    """Transient: retry with backoff."""


class PlatformRejected(PlatformError):
    """The platform refused the token (NOT_FOUND, UNAUTHENTICATED, PERMISSION_DENIED, forbidden)."""


# -- runtimes ------------------------------------------------------------------------------------


class RuntimeFailure(BerthError):
    """A runtime (Docker, Kubernetes, in-memory) could not do what a command asked."""


class NotFound(RuntimeFailure):
    """The target container, workload or prefix does not exist (CommandError status 5)."""


class PermanentCommandError(RuntimeFailure):
    """The command cannot succeed as given: bad input, unpullable image, refused by the engine."""


class InvalidSpec(PermanentCommandError):
    """The command's content is invalid (names, ports, paths, quantities); the field is named."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"invalid {field}: {problem}")
        self.field = field


class TemporaryCommandError(RuntimeFailure):
    """The engine or API server is unavailable right now; the same command may succeed later."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UpdateRefused(BerthError):
    """Self-update is not possible here or failed; the reason goes to AbortUpdate."""
