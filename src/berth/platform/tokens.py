"""Agent JWTs: HS256 with the platform's own secret, ``iss`` = the advertised agent address (§3.3).

There is no ``exp``: install tokens expire through the stored installer window, connection tokens
through the node's stored nonce (revoke deletes it).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Final, Literal

import jwt

TOKEN_VERSION: Final = "0.1.0"
NONCE_BYTES: Final = 128  # 256 hex characters

TokenType = Literal["install", "connection"]


class TokenRejected(Exception):
    """The signature or issuer does not verify (the platform answers "Forbidden resource")."""


class TokenMalformed(Exception):
    """The token verifies but lacks a claim the platform needs (INVALID_ARGUMENT)."""


@dataclass(frozen=True)
class Claims:
    sub: str
    nonce: str
    type: str
    iat: int
    iss: str
    version: str


@dataclass(frozen=True)
class IssuedToken:
    token: str
    nonce: str
    claims: Claims


class TokenIssuer:
    def __init__(self, secret: bytes, issuer: str) -> None:
        self._secret = secret
        self.issuer = issuer

    def issue(self, node_id: str, token_type: TokenType, *, now: float | None = None) -> IssuedToken:
        nonce = secrets.token_hex(NONCE_BYTES)
        iat = int(time.time() if now is None else now)
        claims = Claims(
            sub=node_id, nonce=nonce, type=token_type, iat=iat, iss=self.issuer, version=TOKEN_VERSION
        )
        payload = {
            "iat": claims.iat,
            "sub": claims.sub,
            "nonce": claims.nonce,
            "version": claims.version,
            "type": claims.type,
            "iss": claims.iss,
        }
        token = jwt.encode(payload, self._secret, algorithm="HS256")
        return IssuedToken(token=token, nonce=nonce, claims=claims)

    def verify(self, token: str) -> Claims:
        """Checks the signature and the issuer on every call, then the claims the strategies read."""
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                issuer=self.issuer,
                options={"require": ["iss"], "verify_iat": False},
            )
        except jwt.PyJWTError as err:
            raise TokenRejected(type(err).__name__) from None
        if "version" not in payload:
            raise TokenMalformed("the token has no version claim")
        sub, nonce, kind, iat = (
            payload.get("sub"),
            payload.get("nonce"),
            payload.get("type"),
            payload.get("iat"),
        )
        if not isinstance(sub, str) or not sub or not isinstance(nonce, str) or not isinstance(iat, int):
            raise TokenMalformed("the token lacks sub, nonce or iat")
        return Claims(
            sub=sub, nonce=nonce, type=str(kind), iat=iat, iss=self.issuer, version=str(payload["version"])
        )
