from __future__ import annotations

from pathlib import Path

import pytest
from fakeplatform import mint_token

from berth.agent.credentials import FileCredentialStore, parse_token
from berth.agent.tokens import NoToken, RefusalOutcome, TokenKeeper


def _store(tmp_path: Path, token: str | None = None, blacklist: str | None = None) -> FileCredentialStore:
    store = FileCredentialStore(tmp_path)
    if token is not None:
        store.write("token.jwt", token)
    if blacklist is not None:
        store.write("token-nonce.blacklist", blacklist)
    return store


def test_neither_token_is_usable(tmp_path: Path) -> None:
    with pytest.raises(NoToken, match="no token"):
        TokenKeeper.select(_store(tmp_path), "")
    with pytest.raises(NoToken):
        TokenKeeper.select(_store(tmp_path, "broken"), "also.broken")


def test_only_one_valid_token_is_used(tmp_path: Path) -> None:
    env = mint_token(iss="p:1", sub="n")
    keeper = TokenKeeper.select(_store(tmp_path, "broken"), env)
    assert keeper.current.raw == env and keeper.fallback is None
    stored = mint_token(iss="p:1", sub="n", token_type="connection")
    keeper = TokenKeeper.select(_store(tmp_path / "b", stored), "")
    assert keeper.current.raw == stored and keeper.fallback is None


def test_same_platform_stored_is_primary_env_is_fallback(tmp_path: Path) -> None:
    stored = mint_token(iss="p:1", sub="n", token_type="connection")
    env = mint_token(iss="p:1", sub="n")
    keeper = TokenKeeper.select(_store(tmp_path, stored), env)
    assert keeper.current.raw == stored
    assert keeper.fallback is not None and keeper.fallback.raw == env


def test_other_platform_in_env_replaces_the_stored_token(tmp_path: Path) -> None:
    store = _store(tmp_path, mint_token(iss="old:1", sub="n", token_type="connection"))
    env = mint_token(iss="new:1", sub="n")
    keeper = TokenKeeper.select(store, env)
    assert keeper.current.raw == env and keeper.fallback is None
    assert store.read("token.jwt") is None


def test_blacklisted_nonce_invalidates_the_env_token(tmp_path: Path) -> None:
    env = mint_token(iss="p:1", sub="n", nonce="refused-nonce")
    with pytest.raises(NoToken):
        TokenKeeper.select(_store(tmp_path, blacklist="refused-nonce"), env)


def test_refusal_sequence(tmp_path: Path) -> None:
    stored = mint_token(iss="p:1", sub="n", token_type="connection")
    env = mint_token(iss="p:1", sub="n", nonce="install-nonce")
    store = _store(tmp_path, stored)
    keeper = TokenKeeper.select(store, env)
    assert keeper.refused() == RefusalOutcome.RETRY_WITH_FALLBACK
    assert store.read("token.jwt") is None
    assert keeper.current.raw == env
    assert keeper.refused() == RefusalOutcome.STOP_FALLBACK_REFUSED
    assert store.read("token-nonce.blacklist") == "install-nonce"


def test_primary_install_refused_without_fallback(tmp_path: Path) -> None:
    store = _store(tmp_path)
    keeper = TokenKeeper.select(store, mint_token(iss="p:1", sub="n", nonce="nn"))
    assert keeper.refused() == RefusalOutcome.STOP_PRIMARY_REFUSED
    assert store.read("token-nonce.blacklist") == "nn"


def test_replacement_is_staged_then_committed(tmp_path: Path) -> None:
    store = _store(tmp_path)
    keeper = TokenKeeper.select(store, mint_token(iss="p:1", sub="n"))
    new = mint_token(iss="p:1", sub="n", token_type="connection")
    pending = keeper.prepare_replacement(new)
    assert store.read("token.jwt") is None
    assert keeper.current.type == "install"
    pending.commit()
    assert store.read("token.jwt") == new
    assert keeper.current == parse_token(new)
    failed = keeper.prepare_replacement(mint_token(iss="p:1", sub="n", token_type="connection"))
    failed.discard()
    assert store.read("token.jwt") == new
    keeper.revoke()
    assert store.read("token.jwt") is None


def test_replacement_switches_even_when_the_file_cannot_be_written(tmp_path: Path) -> None:
    store = _store(tmp_path)
    keeper = TokenKeeper.select(store, mint_token(iss="p:1", sub="n"))
    new = mint_token(iss="p:1", sub="n", token_type="connection")
    pending = keeper.prepare_replacement(new)
    (tmp_path / "token.jwt").mkdir()  # the rename target is now a directory: the rename fails
    pending.commit()
    assert keeper.current.raw == new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token.jwt"]
