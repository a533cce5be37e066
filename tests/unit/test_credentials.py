from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pysequoia
import pytest
import structlog
from fakeplatform import mint_token

from berth.agent.credentials import (
    KEY_CACHE_FILE,
    KEY_FILE,
    AgentKey,
    FileCredentialStore,
    check_replacement,
    parse_token,
)
from berth.errors import SecretError, TokenError


def _jwt(claims: dict[str, object], header: dict[str, object] | None = None) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part(header or {'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2ln"


GOOD = {"iat": int(time.time()), "sub": "node", "iss": "platform:5000", "nonce": "ab", "type": "install"}


def test_parse_token_reads_claims_and_keeps_the_raw_string() -> None:
    raw = mint_token(iss="platform:5000", sub="node-1", token_type="connection", nonce="n1")
    token = parse_token(f"  {raw}\n")
    assert (token.sub, token.iss, token.nonce, token.type) == ("node-1", "platform:5000", "n1", "connection")
    assert token.raw == raw
    assert raw not in repr(token)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("", "not a JWT"),
        ("abc", "not a JWT"),
        ("a.b", "not a JWT"),
        ("!!!.###.x", "base64url"),
        (base64.urlsafe_b64encode(b"[1]").decode() + ".e30.x", "header is not a JSON object"),
        ("e30.e30.x", "no algorithm"),
        (_jwt({"sub": "n", "iss": "i"}), "no 'iat'"),
        (_jwt({**GOOD, "iat": "yesterday"}), "not a number"),
        (_jwt({**GOOD, "iat": time.time() + 3600}), "future"),
        (_jwt({**GOOD, "exp": time.time() - 3600}), "expired"),
        (_jwt({**GOOD, "nbf": time.time() + 3600}), "not valid yet"),
        (_jwt({**GOOD, "sub": ""}), "empty 'sub'"),
        (_jwt({**GOOD, "iss": ""}), "empty 'iss'"),
        (_jwt({**GOOD, "iss": 5}), "not a string"),
    ],
)
def test_malformed_or_unacceptable_tokens_raise_without_echoing(raw: str, problem: str) -> None:
    with pytest.raises(TokenError, match=problem) as caught:
        parse_token(raw)
    if len(raw) > 8:
        assert raw not in str(caught.value)


def test_iat_clock_skew_is_tolerated() -> None:
    parse_token(_jwt({**GOOD, "iat": time.time() + 30}))


def test_replacement_must_be_a_connection_token_for_the_same_node_and_platform() -> None:
    current = parse_token(_jwt(GOOD))
    check_replacement(current, parse_token(_jwt({**GOOD, "type": "connection"})))
    for changed, problem in (
        ({"type": "install"}, "type"),
        ({"sub": "x"}, "node"),
        ({"iss": "y:1"}, "platform"),
    ):
        with pytest.raises(TokenError, match=problem):
            check_replacement(current, parse_token(_jwt({**GOOD, "type": "connection", **changed})))


def test_file_store_writes_0600_atomically_and_deletes_idempotently(tmp_path: Path) -> None:
    store = FileCredentialStore(tmp_path / "data")
    assert store.read("token.jwt") is None
    store.write("token.jwt", "value-1")
    path = tmp_path / "data" / "token.jwt"
    assert path.read_text() == "value-1"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store.write("token.jwt", "value-2")
    assert store.read("token.jwt") == "value-2"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["token.jwt"]
    store.delete("token.jwt")
    store.delete("token.jwt")
    assert store.read("token.jwt") is None
    path.write_text("  \n")
    assert store.read("token.jwt") is None


def test_staged_write_is_invisible_until_commit(tmp_path: Path) -> None:
    store = FileCredentialStore(tmp_path)
    store.write("token.jwt", "old")
    staged = store.stage("token.jwt", "new")
    assert store.read("token.jwt") == "old"
    staged.commit()
    assert store.read("token.jwt") == "new"
    discarded = store.stage("token.jwt", "never")
    discarded.discard()
    assert store.read("token.jwt") == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token.jwt"]


def test_key_is_created_once_and_its_armor_is_stable(tmp_path: Path) -> None:
    store = FileCredentialStore(tmp_path)
    first = AgentKey.load_or_create(store)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    second = AgentKey.load_or_create(store)
    assert first.public_key == second.public_key
    assert first.public_key.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----\n")
    assert "Comment:" not in first.public_key and "Version:" not in first.public_key
    assert "PRIVATE" not in first.public_key


def test_key_is_v4_eddsa_with_ecdh_curve25519_subkey(tmp_path: Path) -> None:
    key = AgentKey.load_or_create(FileCredentialStore(tmp_path))
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    packets = subprocess.run(
        ["gpg", "--batch", "--list-packets"],
        input=key.public_key.encode(),
        env={**os.environ, "GNUPGHOME": str(home)},
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert ":public key packet:\n\tversion 4, algo 22" in packets
    assert ":public sub key packet:\n\tversion 4, algo 18" in packets
    assert "dyrector.io agent <hello@dyrector.io>" in packets


def test_decrypt_roundtrip_empty_value_and_failure_names_only_the_key(tmp_path: Path) -> None:
    key = AgentKey.load_or_create(FileCredentialStore(tmp_path))
    cert = pysequoia.Cert.from_bytes(key.public_key.encode())
    cipher = pysequoia.encrypt(b"p@ss word", [cert]).decode()
    assert key.decrypt("PW", cipher) == "p@ss word"
    assert key.decrypt_all({"A": cipher, "B": ""}) == {"A": "p@ss word", "B": ""}
    other = AgentKey.generate()
    foreign = pysequoia.encrypt(
        b"top-secret", [pysequoia.Cert.from_bytes(other.public_key.encode())]
    ).decode()
    with pytest.raises(SecretError) as caught:
        key.decrypt("DB_PASSWORD", foreign)
    assert caught.value.key == "DB_PASSWORD"
    assert "DB_PASSWORD" in str(caught.value)
    assert "top-secret" not in str(caught.value)
    with pytest.raises(SecretError):
        key.decrypt("X", "plain text, not a message")


def test_corrupt_key_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_text("garbage")
    with pytest.raises(Exception, match=r"secret\.key"):
        AgentKey.load_or_create(FileCredentialStore(tmp_path))


def _load_or_create_in_a_new_process(folder: Path) -> list[str]:
    """A new agent process's key from ``folder``: [its fingerprint, whether pysequoia was loaded]."""
    code = (
        "import sys; from pathlib import Path; "
        "from berth.agent.credentials import AgentKey, FileCredentialStore; "
        f"key = AgentKey.load_or_create(FileCredentialStore(Path({str(folder)!r}))); "
        "print(key.fingerprint, 'pysequoia' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return result.stdout.split()


def test_a_start_reads_the_public_half_without_the_openpgp_library(tmp_path: Path) -> None:
    created = AgentKey.load_or_create(FileCredentialStore(tmp_path))
    assert stat.S_IMODE((tmp_path / KEY_CACHE_FILE).stat().st_mode) == 0o600
    assert _load_or_create_in_a_new_process(tmp_path) == [created.fingerprint, "False"]
    loaded = AgentKey.load_or_create(FileCredentialStore(tmp_path))
    assert (loaded.public_key, loaded.fingerprint) == (created.public_key, created.fingerprint)
    cert = pysequoia.Cert.from_bytes(loaded.public_key.encode())
    assert loaded.decrypt("PW", pysequoia.encrypt(b"opened late", [cert]).decode()) == "opened late"


def test_a_first_start_generates_its_key_without_loading_the_openpgp_library(tmp_path: Path) -> None:
    """The key is made by a child process (``berth.agent.keygen``): the agent, idle after a first
    start or a fresh install, does not keep the library mapped; the key works when it is opened."""
    fingerprint, loaded = _load_or_create_in_a_new_process(tmp_path)
    assert loaded == "False"
    key = AgentKey.load_or_create(FileCredentialStore(tmp_path))
    assert key.fingerprint == fingerprint
    secret = pysequoia.Tsk.from_bytes((tmp_path / KEY_FILE).read_bytes())
    assert str(secret.extract_certificate().fingerprint) == fingerprint
    cert = pysequoia.Cert.from_bytes(key.public_key.encode())
    assert key.decrypt("PW", pysequoia.encrypt(b"made apart", [cert]).decode()) == "made apart"


def test_the_key_is_made_in_process_when_the_generator_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    with structlog.testing.capture_logs() as logs:
        key = AgentKey.load_or_create(FileCredentialStore(tmp_path))
    assert [entry["event"] for entry in logs] == ["key_generated_in_process"]
    assert "no-such-python" in logs[0]["reason"]
    cert = pysequoia.Cert.from_bytes(key.public_key.encode())
    assert key.decrypt("PW", pysequoia.encrypt(b"made here", [cert]).decode()) == "made here"


def test_the_public_half_follows_a_replaced_or_damaged_secret_key(tmp_path: Path) -> None:
    store = FileCredentialStore(tmp_path)
    first = AgentKey.load_or_create(store)
    other = AgentKey.generate()
    store.write(KEY_FILE, other._armored)  # a restored backup, another node's key
    assert AgentKey.load_or_create(store).fingerprint == other.fingerprint
    (tmp_path / KEY_CACHE_FILE).write_text("{not json")
    again = AgentKey.load_or_create(store)
    assert (again.public_key, again.fingerprint) == (other.public_key, other.fingerprint)
    assert first.fingerprint != other.fingerprint
