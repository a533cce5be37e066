"""Errors the platform's operations raise; the HTTP layer turns each into its status code."""

from __future__ import annotations

from berth.errors import BerthError


class ApiProblem(BerthError):
    status = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def body(self) -> dict[str, str]:
        body = {"message": self.message}
        if self.field is not None:
            body["property"] = self.field
        return body


class InvalidInput(ApiProblem):
    status = 400

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}", field=field)


class PayloadTooLarge(ApiProblem):
    status = 413


class UnknownEntity(ApiProblem):
    status = 404


class NodeNotConnected(ApiProblem):
    status = 409


class Conflict(ApiProblem):
    status = 409


class NodeBusy(ApiProblem):
    """The node is updating (replaceToken pending, update < 300 s) or outdated (§5)."""

    status = 412


class AgentFailed(ApiProblem):
    """The agent answered a callback with status 13 (or something unexpected)."""

    status = 500


class AgentTimedOut(ApiProblem):
    status = 504


class ServerMisconfigured(ApiProblem):
    status = 500
