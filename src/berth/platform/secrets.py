"""Encryption at rest of what the store must keep but nobody should read from a copy of it:
registry passwords, deployment secret values, install tokens and the JWT signing secret.

The key is a Fernet key (AES-128-CBC with HMAC-SHA256, from ``cryptography``) in its own 0600
file beside the database. This protects copies and backups of ``platform.db`` (and its WAL), not a
reader of the whole data folder. A sealed value is ``sealed:v1:<fernet token>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from cryptography.fernet import Fernet, InvalidToken

from berth.errors import ConfigError
from berth.files import write_atomic

KEY_FILE: Final = "at-rest.key"
SEALED_PREFIX: Final = "sealed:v1:"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def load_or_create(cls, data_dir: Path) -> SecretBox:
        """Blocking file I/O: call it from a worker thread."""
        path = data_dir / KEY_FILE
        if path.is_file():
            path.chmod(0o600)
            try:
                return cls(path.read_bytes().strip())
            except ValueError:
                raise ConfigError(KEY_FILE, f"{path} does not hold a valid key") from None
        key = Fernet.generate_key()
        write_atomic(path, key + b"\n")
        return cls(key)

    @staticmethod
    def is_sealed(value: str) -> bool:
        return value.startswith(SEALED_PREFIX)

    def seal(self, value: str) -> str:
        if value == "" or self.is_sealed(value):
            return value
        return SEALED_PREFIX + self._fernet.encrypt(value.encode()).decode()

    def open(self, value: str) -> str:
        """The clear text of a sealed value; a value stored before sealing existed is returned as
        is (the migration at start seals it)."""
        if not self.is_sealed(value):
            return value
        try:
            return self._fernet.decrypt(value[len(SEALED_PREFIX) :].encode()).decode()
        except InvalidToken:
            raise ConfigError(KEY_FILE, "a sealed value does not open with this key") from None
