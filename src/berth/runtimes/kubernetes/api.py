"""A thin, blocking JSON client over the official ``kubernetes`` client's transport.

Objects are plain dicts; writes are server-side apply (``application/apply-patch+yaml``) with the
configured field manager and force. The client is created lazily on first use (the import of
``kubernetes`` costs memory the idle agent does not need). Every method blocks: callers run them
in threads. One-shot calls carry ``request_timeout_s``; streams (watches, log follows) carry no
client timeout (§17 #41) and are closed by their owner.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from berth.errors import InvalidSpec, NotFound, PermanentCommandError
from berth.runtimes.kubernetes.api_errors import ApiStatus, Request, translate, unreachable
from berth.runtimes.kubernetes.resources import NAMESPACE, Kind, kind_of
from berth.settings import KubernetesSettings

log = structlog.get_logger(__name__)

Obj = dict[str, Any]
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_CONTENT_TYPE = "application/merge-patch+json"
STRATEGIC_MERGE_CONTENT_TYPE = "application/strategic-merge-patch+json"


class KubeApi:
    """Blocking access to one cluster; safe to share between threads."""

    def __init__(self, settings: KubernetesSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._client: Any = None

    @property
    def field_manager(self) -> str:
        return self._settings.field_manager

    def _api_client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = _build_client(self._settings)
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- one-shot requests ---------------------------------------------------------------------

    def call(
        self,
        request: Request,
        method: str,
        path: str,
        *,
        query: Iterable[tuple[str, str]] = (),
        body: Any = None,
        content_type: str | None = None,
    ) -> Obj:
        """One request; the decoded JSON answer, or a translated ``RuntimeFailure``."""
        client = self._api_client()
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        method_, url, headers_, _, _ = client.param_serialize(
            method, path, query_params=list(query), header_params=headers, auth_settings=["BearerToken"]
        )
        try:
            response = client.call_api(
                method_,
                url,
                header_params=headers_,
                body=body,
                _request_timeout=self._settings.request_timeout_s,
            )
            data = response.read()
        except Exception as err:
            raise _transport_error(request, err) from err
        if not 200 <= response.status <= 299:
            raise translate(ApiStatus.parse(response.status, data), request)
        return json.loads(data) if data else {}

    def version(self) -> Obj:
        return self.call(Request("get", NAMESPACE), "GET", "/version")

    def has_api(self, group_version: str) -> bool:
        """Discovery: is ``group/version`` served (e.g. ``monitoring.coreos.com/v1``)?"""
        try:
            self.call(Request("get", NAMESPACE), "GET", f"/apis/{group_version}")
        except NotFound:
            return False
        return True

    def can(self, verb: str, kind: Kind, namespace: str | None) -> bool:
        """SelfSubjectAccessReview: may the agent's own account ``verb`` this kind here? Every
        authenticated account may ask (``system:basic-user``)."""
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "verb": verb,
                    "group": kind.group,
                    "resource": kind.plural,
                    "namespace": namespace if kind.namespaced and namespace else "",
                }
            },
        }
        answer = self.call(
            Request("create", kind, namespace),
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            body=review,
            content_type="application/json",
        )
        return bool((answer.get("status") or {}).get("allowed"))

    def get(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        return self.call(Request("get", kind, namespace, name), "GET", kind.path(namespace, name))

    def get_or_none(self, kind: Kind, namespace: str | None, name: str) -> Obj | None:
        try:
            return self.get(kind, namespace, name)
        except NotFound:
            return None

    def list(self, kind: Kind, namespace: str | None, *, label_selector: str = "") -> Obj:
        query = [("labelSelector", label_selector)] if label_selector else []
        return self.call(Request("list", kind, namespace), "GET", kind.path(namespace), query=query)

    def apply(self, obj: Obj) -> Obj:
        """Server-side apply of a whole object with the field manager (and force)."""
        kind = kind_of(obj)
        meta = obj["metadata"]
        namespace, name = meta.get("namespace"), meta["name"]
        query = [("fieldManager", self._settings.field_manager)]
        if self._settings.force_on_conflicts:
            query.append(("force", "true"))
        return self.call(
            Request("patch", kind, namespace, name),
            "PATCH",
            kind.path(namespace, name),
            query=query,
            body=json.dumps(obj).encode(),
            content_type=APPLY_CONTENT_TYPE,
        )

    def merge_patch(self, kind: Kind, namespace: str | None, name: str, patch: Mapping[str, Any]) -> Obj:
        return self._patch(kind, namespace, name, patch, MERGE_CONTENT_TYPE)

    def strategic_patch(self, kind: Kind, namespace: str | None, name: str, patch: Mapping[str, Any]) -> Obj:
        return self._patch(kind, namespace, name, patch, STRATEGIC_MERGE_CONTENT_TYPE)

    def _patch(
        self, kind: Kind, namespace: str | None, name: str, patch: Mapping[str, Any], content_type: str
    ) -> Obj:
        return self.call(
            Request("patch", kind, namespace, name),
            "PATCH",
            kind.path(namespace, name),
            query=[("fieldManager", self._settings.field_manager)],
            body=dict(patch),
            content_type=content_type,
        )

    def delete(self, kind: Kind, namespace: str | None, name: str) -> bool:
        """Delete with background propagation; ``False`` when it was already gone."""
        if not name:  # without a name the path is the collection: never delete a whole kind
            raise InvalidSpec(kind.kind, "an object to delete needs a name")
        try:
            self.call(
                Request("delete", kind, namespace, name),
                "DELETE",
                kind.path(namespace, name),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
                content_type="application/json",
            )
        except NotFound:
            return False
        return True

    # -- streams -------------------------------------------------------------------------------

    def open_stream(self, request: Request, path: str, query: Iterable[tuple[str, str]]) -> Any:
        """A streaming GET (watch, log follow) without a client timeout: the urllib3 response.

        The caller iterates it and closes it (``shutdown()`` from another thread unblocks a read).
        """
        client = self._api_client()
        method_, url, headers_, _, _ = client.param_serialize(
            "GET", path, query_params=list(query), header_params={}, auth_settings=["BearerToken"]
        )
        try:
            response = client.call_api(method_, url, header_params=headers_, _request_timeout=None)
        except Exception as err:
            raise _transport_error(request, err) from err
        raw = response.response
        if not 200 <= response.status <= 299:
            data = raw.data
            raw.release_conn()
            raise translate(ApiStatus.parse(response.status, data), request)
        return raw


def _transport_error(request: Request, err: BaseException) -> Exception:
    from kubernetes.client.exceptions import ApiException

    if isinstance(err, ApiException):
        return translate(ApiStatus.parse(err.status or 0, err.body or err.reason), request)
    return unreachable(request, err)


def _build_client(settings: KubernetesSettings) -> Any:
    from kubernetes import config
    from kubernetes.client import ApiClient, Configuration

    kube_config: Any = config  # untyped package

    configuration = Configuration()
    try:
        if settings.in_cluster:
            kube_config.load_incluster_config(client_configuration=configuration)
        else:
            kube_config.load_kube_config(
                config_file=settings.kubeconfig or None, client_configuration=configuration
            )
    except Exception as err:  # the config loaders raise several unrelated types
        source = "the in-cluster service account" if settings.in_cluster else "the kubeconfig"
        raise PermanentCommandError(f"cannot load {source}: {type(err).__name__}: {err}") from err
    log.info("kube_client_created", server=configuration.host, in_cluster=settings.in_cluster)
    return ApiClient(configuration)
