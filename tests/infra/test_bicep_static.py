"""Static checks of infra/bicep against the app (no Bicep compiler can be installed here)."""

from __future__ import annotations

import re
from pathlib import Path

from shared.config import AUTH_MODES, SETTINGS
from shared.pipeline.fanout import QUEUE_NAME
from shared.state import parse_state_location

BICEP = Path(__file__).resolve().parents[2] / "infra" / "bicep"
MAIN = (BICEP / "main.bicep").read_text()
ALL = {path.name: path.read_text() for path in BICEP.rglob("*.bicep")}
# Optional on Azure: the app uses its managed identity and the host storage for the queue;
# the Fabric ids only add Fabric's own per-table state to status.
NOT_SET_ON_AZURE = {
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "QUEUE_STORAGE",
    "FABRIC_WORKSPACE_ID",
    "FABRIC_ITEM_ID",
}


def app_settings() -> dict[str, str]:
    block = MAIN[
        MAIN.index("var mirrorSettings = {") : MAIN.index("}", MAIN.index("var mirrorSettings"))
    ]
    return dict(re.findall(r"^\s+([A-Z_]+):\s*(.+?)\s*(?://.*)?$", block, re.MULTILINE))


def test_every_required_setting_is_set():
    settings = app_settings()
    required = {spec.name for spec in SETTINGS if spec.default is None} - NOT_SET_ON_AZURE
    assert required <= set(settings)
    assert set(settings) <= {spec.name for spec in SETTINGS}
    assert settings["AZURE_AUTH"].strip("'") in AUTH_MODES


def test_flex_consumption_settings_are_not_the_classic_ones():
    for text in ALL.values():  # as setting names; comments may explain their absence
        assert not re.search(
            r"^\s*'?FUNCTIONS_(WORKER_RUNTIME|EXTENSION_VERSION)'?\s*:", text, re.M
        )
        assert not re.search(r"name:\s*'FUNCTIONS_(WORKER_RUNTIME|EXTENSION_VERSION)'", text)
    assert "'FlexConsumption'" in ALL["functionapp.bicep"]
    assert re.search(r"name:\s*'python'", ALL["functionapp.bicep"])


def test_storage_is_locked_down_and_hosts_the_queue_and_state_table():
    storage = ALL["storage.bicep"]
    assert "allowSharedKeyAccess: false" in storage
    assert "minimumTlsVersion: 'TLS1_2'" in storage
    assert "allowBlobPublicAccess: false" in storage
    assert f"var partitionQueueName = '{QUEUE_NAME}'" in MAIN
    table = re.search(r"var stateTableName = '(\w+)'", MAIN)
    assert table is not None
    parsed = parse_state_location(f"https://account.table.core.windows.net/{table.group(1)}")
    assert parsed.table_name == table.group(1)


def test_mongodb_uri_comes_from_key_vault_and_no_secret_is_output():
    assert "@Microsoft.KeyVault(SecretUri=" in ALL["keyvault.bicep"]
    assert "keyVaultReferenceIdentity" in ALL["functionapp.bicep"]
    for name, text in ALL.items():
        secure = re.findall(r"@secure\(\)\s*param\s+(\w+)", text)
        outputs = re.findall(r"^output\s+.*$", text, re.MULTILINE)
        leaks = [s for s in secure for line in outputs if re.search(rf"\b{s}\b", line)]
        assert not leaks, name
        assert "AccountKey=" not in text
