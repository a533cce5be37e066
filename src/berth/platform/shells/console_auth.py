"""Sign-in for the web console: the API token is typed once, then a server-side session lives in
an HttpOnly, SameSite=Strict cookie. Every state-changing request made with a session carries the
session's CSRF token (a form field or the ``X-CSRF-Token`` header); the API token never appears in
a URL or a page. Sessions live in memory: a platform restart signs everyone out."""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Final

from starlette.requests import HTTPConnection

SESSION_COOKIE: Final = "berth_session"
LOGIN_COOKIE: Final = "berth_login"  # double-submit CSRF token of the sign-in form
CSRF_HEADER: Final = "x-csrf-token"
SESSION_IDLE_S: Final = 12 * 3600.0
MAX_SESSIONS: Final = 256  # the oldest session is dropped beyond this
FAILED_SIGN_INS_PER_MINUTE: Final = 10
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class ConsoleSession:
    csrf: str
    created_at: float
    seen_at: float


def same(a: str, b: str) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


class ConsoleSessions:
    def __init__(self, api_token: str) -> None:
        self._api_token = api_token
        self._sessions: OrderedDict[str, ConsoleSession] = OrderedDict()
        self._failures: deque[float] = deque(maxlen=FAILED_SIGN_INS_PER_MINUTE)

    def throttled(self) -> bool:
        """True while the last failed sign-ins came faster than the allowed rate."""
        now = time.monotonic()
        return len(self._failures) == self._failures.maxlen and now - self._failures[0] < 60.0

    def sign_in(self, presented: str) -> tuple[str, ConsoleSession] | None:
        if not same(presented.strip(), self._api_token):
            self._failures.append(time.monotonic())
            return None
        now = time.time()
        session_id = secrets.token_urlsafe(32)
        session = ConsoleSession(csrf=secrets.token_urlsafe(32), created_at=now, seen_at=now)
        self._sessions[session_id] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session_id, session

    def sign_out(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def current(self, connection: HTTPConnection) -> tuple[str, ConsoleSession] | None:
        session_id = connection.cookies.get(SESSION_COOKIE, "")
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = time.time()
        if now - session.seen_at > SESSION_IDLE_S:
            del self._sessions[session_id]
            return None
        session.seen_at = now
        return session_id, session

    def authorizes(self, connection: HTTPConnection, method: str, csrf: str | None = None) -> bool:
        """A live session, and for a state-changing method its CSRF token (header or ``csrf``)."""
        found = self.current(connection)
        if found is None:
            return False
        if method in SAFE_METHODS:
            return True
        presented = csrf if csrf is not None else connection.headers.get(CSRF_HEADER, "")
        return same(presented, found[1].csrf)


def same_origin(connection: HTTPConnection) -> bool:
    """A browser's WebSocket handshake names its page's origin: it must be this server."""
    origin = connection.headers.get("origin", "")
    host = connection.headers.get("host", "")
    return bool(host) and origin in (f"http://{host}", f"https://{host}")
