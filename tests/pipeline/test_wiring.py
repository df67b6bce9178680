"""Credentials are proven before anything is written; a process opens its context once.

Microsoft Entra cannot run here, so a stand-in credential plays a tenant that refuses the token.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from azure.core.exceptions import ClientAuthenticationError
from pymongo.errors import InvalidOperation

from shared.config import AzureAuth, load_settings
from shared.errors import ConfigError
from shared.pipeline import wiring

ONELAKE = "https://onelake.dfs.fabric.microsoft.com/11111111-2222-3333-4444-555555555555/item/Files/LandingZone"


class RefusingCredential:
    def get_token(self, *scopes: str, **kwargs: object) -> object:
        assert scopes == (wiring.STORAGE_SCOPE,)
        raise ClientAuthenticationError("AADSTS7000215: Invalid client secret provided.")


def test_a_refused_credential_fails_fast_naming_azure_auth(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(AzureAuth, "credential", lambda self: RefusingCredential())
    settings = load_settings({"LANDING_ZONE": ONELAKE})
    with pytest.raises(ConfigError) as caught:
        wiring.open_landing_zone_store(settings)
    assert caught.value.setting == "AZURE_AUTH"
    assert "AADSTS7000215" in str(caught.value)


def test_local_and_connection_string_locations_need_no_token(monkeypatch, tmp_path, azurite):
    monkeypatch.setattr(AzureAuth, "credential", lambda self: RefusingCredential())
    settings = load_settings(
        {
            "LANDING_ZONE": str(tmp_path / "lz"),
            "STATE_STORE": f"{azurite.connection_string};TableName=wiringcheck",
        }
    )
    assert wiring.open_landing_zone_store(settings).description.startswith("local folder")
    state = wiring.open_state(settings)
    state.close()


class CountingCredential:
    def __init__(self) -> None:
        self.tokens = 0

    def get_token(self, *scopes: str, **kwargs: object) -> object:
        self.tokens += 1
        return object()


def test_the_publisher_proves_its_credential_once(monkeypatch: pytest.MonkeyPatch, tmp_path):
    credential = CountingCredential()
    monkeypatch.setattr(AzureAuth, "credential", lambda self: credential)
    settings = load_settings({"LANDING_ZONE": ONELAKE, "STATE_STORE": str(tmp_path / "s.db")})
    publisher = wiring.open_publisher(settings)
    assert credential.tokens == 1
    assert publisher.store.description.startswith("DFS file system")
    publisher.state.close()


def test_a_context_cache_opens_one_context_until_closed(tmp_path, mongodb_uri: str):
    settings = load_settings(
        {
            "MONGODB_URI": mongodb_uri,
            "LANDING_ZONE": str(tmp_path / "lz"),
            "STATE_STORE": str(tmp_path / "s.db"),
        }
    )
    cache = wiring.ContextCache()
    assert cache.opened is None  # nothing is opened before first use
    with ThreadPoolExecutor(4) as threads:
        opened = set(map(id, threads.map(lambda _: cache.get(settings), range(8))))
    first = cache.get(settings)
    assert opened == {id(first)} and cache.opened is first

    cache.close()
    assert cache.opened is None
    with pytest.raises(InvalidOperation):  # closed, not merely forgotten
        first.mongo.admin.command("ping")
    second = cache.get(settings)
    assert second is not first
    cache.close()
