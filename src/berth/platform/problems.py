"""Errors the platform's operations raise; the HTTP layer turns each into its status code."""

from __future__ import annotations

from berth.errors import BerthError


class ApiProblem(BerthError):
    """A problem the platform explains to the caller; each kind names its HTTP status."""

    status = 500

    def __init_subclass__(cls, *, status: int | None = None) -> None:
        super().__init_subclass__()
        if status is not None:
            cls.status = status

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def body(self) -> dict[str, str]:
        body = {"message": self.message}
        if self.field is not None:
            body["property"] = self.field
        return body


class InvalidInput(ApiProblem, status=400):
    """One field of the request is wrong; the body names it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}", field=field)


class PayloadTooLarge(ApiProblem, status=413):
    """The request's body (or form) is over the configured limit."""


class UnknownEntity(ApiProblem, status=404):
    """No node, deployment, instance, registry or container by that id."""


class NodeNotConnected(ApiProblem, status=409):
    """The node's agent is not connected, or went away before it answered."""


class Conflict(ApiProblem, status=409):
    """The request does not fit the current state (a deployment in progress, a token in place)."""


class NodeBusy(ApiProblem, status=412):
    """The node is updating (replaceToken pending, update < 300 s) or outdated (§5)."""


class AgentFailed(ApiProblem, status=500):
    """The agent answered a callback with status 13 (or something unexpected)."""


class AgentTimedOut(ApiProblem, status=504):
    """The agent did not answer a callback in time."""


class ServerMisconfigured(ApiProblem, status=500):
    """The platform itself cannot serve the request (an install-script template is missing)."""
