"""The agent's credentials in one Opaque Secret (§15.11): ``secret.key``, ``token.jwt`` and
``token-nonce.blacklist``. Synchronous (the agent calls it from a thread). A write ensures the
namespace, merges the one key into the Secret's data and applies the result (one API write, so
it is atomic). A deleted value is stored as ``""``. Values never reach a log or an error."""

from __future__ import annotations

import base64
import binascii

from berth.errors import PersistenceError, RuntimeFailure
from berth.runtimes.kubernetes import manifests, resources
from berth.runtimes.kubernetes.api import KubeApi
from berth.settings import KubernetesSettings


class KubernetesCredentialStore:
    """Implements ``berth.runtimes.base.CredentialStore`` over ``$SECRET_NAMESPACE/$SECRET_NAME``."""

    def __init__(self, settings: KubernetesSettings, api: KubeApi | None = None) -> None:
        self._namespace = settings.secret_namespace
        self._name = settings.secret_name
        self._api = api or KubeApi(settings)

    def _where(self) -> str:
        return f"Secret {self._namespace}/{self._name}"

    def _data(self) -> dict[str, str]:
        try:
            secret = self._api.get_or_none(resources.SECRET, self._namespace, self._name)
        except RuntimeFailure as err:
            raise PersistenceError(f"cannot read {self._where()}: {err}") from err
        if secret is None:
            return {}
        decoded = {}
        for key, value in (secret.get("data") or {}).items():
            try:
                decoded[key] = base64.b64decode(value).decode()
            except (binascii.Error, UnicodeDecodeError) as err:
                raise PersistenceError(f"{self._where()} key {key!r} is not valid base64 text") from err
        return decoded

    def read(self, key: str) -> str | None:
        return self._data().get(key) or None

    def write(self, key: str, value: str) -> None:
        data = self._data()
        data[key] = value
        try:
            self._api.apply(manifests.namespace(self._namespace))
            self._api.apply(manifests.opaque_secret(self._name, self._namespace, data))
        except RuntimeFailure as err:
            raise PersistenceError(f"cannot write key {key!r} to {self._where()}: {err}") from err

    def delete(self, key: str) -> None:
        if self._data().get(key):
            self.write(key, "")

    def ensure_namespace(self) -> bool:
        """Create ``SECRET_NAMESPACE`` when it is missing; ``True`` when it was created. An
        existing namespace is left untouched (no write)."""
        try:
            if self._api.get_or_none(resources.NAMESPACE, None, self._namespace) is not None:
                return False
            self._api.apply(manifests.namespace(self._namespace))
        except RuntimeFailure as err:
            raise PersistenceError(f"cannot make sure namespace {self._namespace} exists: {err}") from err
        return True

    def where(self) -> str:
        return self._where()

    def close(self) -> None:
        self._api.close()
