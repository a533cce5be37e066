"""The agent's credentials: the JWT tokens (install / connection), the nonce blacklist, the
OpenPGP key, and the files-based credential store used on Docker and systemd hosts.

No token, key or secret value is ever put into a log line or an exception message.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

import structlog

from berth.agent import keygen
from berth.errors import PersistenceError, SecretError, TokenError
from berth.model import SecretValue
from berth.runtimes.base import CredentialStore

if TYPE_CHECKING:  # loaded on first use: see AgentKey
    import pysequoia

KEY_FILE: Final = "secret.key"
KEY_CACHE_FILE: Final = "secret.key.public.json"  # the public half of KEY_FILE, see AgentKey
TOKEN_FILE: Final = "token.jwt"
BLACKLIST_FILE: Final = "token-nonce.blacklist"
KEYGEN_TIMEOUT_S: Final = 60.0
INSTALL: Final = "install"
CONNECTION: Final = "connection"

log = structlog.get_logger("berth.agent.credentials")


# -- tokens ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    """A platform JWT, kept as the exact string the platform issued (it is never re-encoded).

    The signature cannot be checked here (HS256 with the platform's secret); only the claims are read.
    """

    raw: str
    sub: str
    iss: str
    nonce: str
    type: str
    iat: float

    def __repr__(self) -> str:
        return f"Token(type={self.type!r}, sub={self.sub!r}, iss={self.iss!r})"

    @property
    def is_install(self) -> bool:
        return self.type == INSTALL


def _b64url_json(segment: str, part: str) -> Mapping[str, object]:
    padded = segment + "=" * (-len(segment) % 4)
    try:
        decoded = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (binascii.Error, UnicodeError, ValueError) as err:
        raise TokenError(f"token {part} is not base64url-encoded JSON") from err
    if not isinstance(decoded, dict):
        raise TokenError(f"token {part} is not a JSON object")
    return decoded


def _number_claim(claims: Mapping[str, object], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError(f"token claim {name!r} is not a number")
    return float(value)


def _text_claim(claims: Mapping[str, object], name: str) -> str:
    value = claims.get(name, "")
    if not isinstance(value, str):
        raise TokenError(f"token claim {name!r} is not a string")
    return value


def parse_token(raw: str, *, now: float | None = None, skew_s: float = 60.0) -> Token:
    """Parse and check a JWT's claims as the reference agents do (§3.3), with a clock-skew allowance.

    Raises ``TokenError`` (never containing the token) when it is malformed or unacceptable.
    """
    raw = raw.strip()
    parts = raw.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise TokenError("token is not a JWT (expected three dot-separated parts)")
    header = _b64url_json(parts[0], "header")
    if not isinstance(header.get("alg"), str):
        raise TokenError("token header has no algorithm")
    claims = _b64url_json(parts[1], "payload")
    current = time.time() if now is None else now
    iat = _number_claim(claims, "iat")
    if iat is None:
        raise TokenError("token has no 'iat' claim")
    if iat > current + skew_s:
        raise TokenError("token 'iat' lies in the future")
    exp = _number_claim(claims, "exp")
    if exp is not None and exp < current - skew_s:
        raise TokenError("token has expired")
    nbf = _number_claim(claims, "nbf")
    if nbf is not None and nbf > current + skew_s:
        raise TokenError("token is not valid yet ('nbf')")
    sub = _text_claim(claims, "sub")
    iss = _text_claim(claims, "iss")
    if not sub:
        raise TokenError("token has an empty 'sub' claim")
    if not iss:
        raise TokenError("token has an empty 'iss' claim")
    return Token(
        raw=raw,
        sub=sub,
        iss=iss,
        nonce=_text_claim(claims, "nonce"),
        type=_text_claim(claims, "type"),
        iat=iat,
    )


def check_replacement(current: Token, new: Token) -> None:
    """A token handed over by ``replaceToken``/``update`` must be a connection token for the same
    node and platform (§17 #7)."""
    if new.type != CONNECTION:
        raise TokenError(f"replacement token has type {new.type!r}, expected 'connection'")
    if new.sub != current.sub:
        raise TokenError("replacement token is for another node ('sub' differs)")
    if new.iss != current.iss:
        raise TokenError("replacement token is for another platform ('iss' differs)")


# -- the credential store on files ------------------------------------------------------------------


class StagedWrite(Protocol):
    def commit(self) -> None: ...

    def discard(self) -> None: ...


@runtime_checkable
class StagingStore(Protocol):
    """A store that can prepare a write and make it visible later (temp file, then rename)."""

    def stage(self, key: str, value: str) -> StagedWrite: ...


class _FileStagedWrite:
    def __init__(self, temp: Path, final: Path) -> None:
        self._temp = temp
        self._final = final
        self._done = False

    def commit(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            os.replace(self._temp, self._final)
            _fsync_dir(self._final.parent)
        except OSError as err:
            with contextlib.suppress(OSError):
                self._temp.unlink()
            raise PersistenceError(f"cannot store {self._final.name}: {err.strerror}") from err

    def discard(self) -> None:
        if self._done:
            return
        self._done = True
        with contextlib.suppress(FileNotFoundError):
            self._temp.unlink()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileCredentialStore:
    """``secret.key``, ``token.jwt`` and ``token-nonce.blacklist`` as 0600 files in the persistence
    folder; writes are temp file + fsync + atomic rename."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, key: str) -> Path:
        if "/" in key or key.startswith("."):
            raise PersistenceError(f"invalid credential name {key!r}")
        return self.folder / key

    def read(self, key: str) -> str | None:
        try:
            value = self._path(key).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as err:
            raise PersistenceError(f"cannot read {key}: {err.strerror}") from err
        return value if value.strip() else None

    def stage(self, key: str, value: str) -> StagedWrite:
        import tempfile  # on use: a restarted agent writes nothing, and its idle memory counts

        final = self._path(key)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, temp_name = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self.folder)
        except OSError as err:
            raise PersistenceError(f"cannot write {key} in {self.folder}: {err.strerror}") from err
        temp = Path(temp_name)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(value)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise PersistenceError(f"cannot write {key}: {err.strerror}") from err
        return _FileStagedWrite(temp, final)

    def write(self, key: str, value: str) -> None:
        if not value:
            self.delete(key)
            return
        self.stage(key, value).commit()

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return
        except OSError as err:
            raise PersistenceError(f"cannot delete {key}: {err.strerror}") from err


# -- the OpenPGP key ----------------------------------------------------------------------------


class AgentKey:
    """The agent's OpenPGP key: an RFC 4880 v4 key with an Ed25519 primary and a Curve25519
    encryption subkey (what openpgp.js v5 encrypts to). Its armored public key has no headers and
    is byte-identical for the same stored key.

    The OpenPGP library (about 5 MB resident, and its import and the key's parsing on the way to
    the first ``Connect``) is loaded by the first decryption or encryption: on a files store the
    armored public key and the fingerprint are kept beside the secret key (``KEY_CACHE_FILE``,
    bound to the secret key by its SHA-256), which is all a start and an idle agent need."""

    def __init__(self, armored_secret: str, public_key: str, fingerprint: str) -> None:
        self._armored = armored_secret
        self.public_key = public_key
        self.fingerprint = fingerprint
        self._opened: tuple[pysequoia.Tsk, pysequoia.PyDecryptor] | None = None
        self._lock = threading.Lock()

    @classmethod
    def _of(cls, secret_key: pysequoia.Tsk) -> AgentKey:
        import pysequoia

        certificate = secret_key.extract_certificate()
        key = cls(
            pysequoia.armor(bytes(secret_key), pysequoia.ArmorKind.SecretKey),
            pysequoia.armor(bytes(certificate), pysequoia.ArmorKind.PublicKey),
            str(certificate.fingerprint),
        )
        key._opened = (secret_key, secret_key.decryptor())
        return key

    @classmethod
    def generate(cls) -> AgentKey:
        """A new key, made in this process (the OpenPGP library stays loaded here)."""
        made = keygen.generate()
        return cls(made["secret"], made["public_key"], made["fingerprint"])

    @classmethod
    def generate_apart(cls) -> AgentKey:
        """A new key, made by ``berth.agent.keygen`` in a child process so that this one does not
        load the OpenPGP library; made here when the child cannot run."""
        try:
            done = subprocess.run(
                [sys.executable, "-c", keygen.CHILD],
                capture_output=True,
                timeout=KEYGEN_TIMEOUT_S,
                check=True,
            )
            made = keygen.parse(done.stdout.decode("ascii"))
            return cls(made["secret"], made["public_key"], made["fingerprint"])
        except subprocess.CalledProcessError as err:
            reason = (err.stderr or b"").decode(errors="replace").strip().rpartition("\n")[2][:300]
        except (OSError, subprocess.SubprocessError, ValueError) as err:
            reason = f"{type(err).__name__}: {err}"[:300]
        log.warning("key_generated_in_process", reason=reason or "the key generator failed")
        return cls.generate()

    @classmethod
    def parse(cls, armored_secret: str) -> AgentKey:
        import pysequoia

        try:
            key = cls._of(pysequoia.Tsk.from_bytes(armored_secret.encode("utf-8")))
        except Exception as err:  # pysequoia raises plain exceptions for parse errors
            raise PersistenceError(f"{KEY_FILE} is not a valid OpenPGP secret key") from err
        key._armored = armored_secret
        return key

    @classmethod
    def load_or_create(cls, store: CredentialStore) -> AgentKey:
        stored = store.read(KEY_FILE)
        if stored is None:
            key = cls.generate_apart()
            store.write(KEY_FILE, key._armored)
        else:
            cached = cls._from_cache(store, stored)
            if cached is not None:
                return cached
            key = cls.parse(stored)
        key._write_cache(store)
        return key

    @staticmethod
    def _digest(armored_secret: str) -> str:
        return hashlib.sha256(armored_secret.encode("utf-8")).hexdigest()

    @classmethod
    def _from_cache(cls, store: CredentialStore, stored: str) -> AgentKey | None:
        if not isinstance(store, FileCredentialStore):
            return None
        try:
            cache = json.loads(store.read(KEY_CACHE_FILE) or "null")
        except ValueError:
            return None
        if not isinstance(cache, dict) or cache.get("secret_sha256") != cls._digest(stored):
            return None  # absent, unreadable or of another secret key: parse the key instead
        public_key, fingerprint = cache.get("public_key"), cache.get("fingerprint")
        if not isinstance(public_key, str) or not isinstance(fingerprint, str):
            return None
        return cls(stored, public_key, fingerprint)

    def _write_cache(self, store: CredentialStore) -> None:
        if isinstance(store, FileCredentialStore):
            cache = {
                "secret_sha256": self._digest(self._armored),
                "public_key": self.public_key,
                "fingerprint": self.fingerprint,
            }
            store.write(KEY_CACHE_FILE, json.dumps(cache))

    def open(self) -> None:
        """Blocking (the library's import and the key's parsing): load the secret key now, so
        that a later decryption on the event loop does not."""
        self._secret()

    def _secret(self) -> tuple[pysequoia.Tsk, pysequoia.PyDecryptor]:
        """The parsed secret key and its decryptor (the library is loaded on first use)."""
        with self._lock:
            if self._opened is None:
                self._opened = AgentKey.parse(self._armored)._secret()
            return self._opened

    def decrypt(self, key: str, armored: str) -> SecretValue:
        """Decrypt one secret value; ``""`` means empty and is not ciphertext."""
        if armored == "":
            return SecretValue("")
        import pysequoia

        try:
            plain = pysequoia.decrypt(armored.encode("utf-8"), decryptor=self._secret()[1]).bytes
        except Exception as err:  # pysequoia raises plain exceptions for every decryption failure
            raise SecretError(key, "not an OpenPGP message for this agent's key") from err
        if plain is None:
            raise SecretError(key, "the message holds no data")
        try:
            return SecretValue(plain.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise SecretError(key, "the decrypted value is not UTF-8 text") from err

    def encrypt_to_self(self, value: str) -> str:
        """An OpenPGP message only this agent can read (what it keeps on disk instead of a
        credential in clear)."""
        import pysequoia

        message = pysequoia.encrypt(
            value.encode("utf-8"), recipients=[self._secret()[0].extract_certificate()]
        )
        return bytes(message).decode("ascii")

    def decrypt_all(self, secrets: Mapping[str, str]) -> dict[str, SecretValue]:
        return {key: self.decrypt(key, value) for key, value in secrets.items()}
