"""infra/bicep against the app, from the templates as pycep-parser parses them.

No Bicep compiler runs here (it is a .NET binary downloaded at run time); these tests read the
parsed templates: modules wired to their parameters and outputs, every setting the engine reads,
identities and roles instead of keys, HTTPS and TLS 1.2, and no secret in a setting or output.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from shared.config import AUTH_MODES, INTEGER_LIMITS, SETTINGS, SPECS, load_settings
from shared.pipeline.fanout import QUEUE_NAME, queue_connection
from shared.state import parse_state_location
from tests.infra.templates import (
    BICEP,
    KEY_VAULT_SECRET,
    MAIN,
    Expression,
    Reference,
    Scope,
    accessor_chain,
    all_templates,
    body,
    interpolations,
    is_reference_to,
    is_secret,
    object_entries,
    parse_expression,
    parse_parameters_file,
    resolve,
    string_leaves,
    template,
    walk,
)

ROOT = BICEP.parents[1]
IDENTITY_ID = ("identity", "id")
IDENTITY_CLIENT_ID = ("identity", "properties", "clientId")
IDENTITY_PRINCIPAL_ID = ("identity", "properties", "principalId")

# Each setting shared/config.py reads is either written by the template or listed here with the
# reason it is not: a setting added to SETTINGS fails test_every_engine_setting_is_decided until
# main.bicep sets it (var mirrorSettings) or it is added here.
LEFT_UNSET_ON_AZURE = {
    "AZURE_TENANT_ID": "service-principal authentication only; the app uses its managed identity",
    "AZURE_CLIENT_SECRET": "service-principal authentication only; the app uses its identity",
    "QUEUE_STORAGE": "the partition queue is in the host storage account (AzureWebJobsStorage)",
    "SNAPSHOT_WORKERS": "the local process pool only; on Azure partitions fan out over the queue",
    "SNAPSHOT_PARTITIONS": "tuning: Settings' default (auto) applies",
    "FILE_ROWS": "tuning: Settings' default applies",
    "FILE_BYTES": "tuning: Settings' default applies",
    "FABRIC_API_URL": "Settings' default (the public Fabric REST endpoint) applies",
    "MONGODB_RETRY_SECONDS": "tuning: Settings' default applies",
    "STORAGE_RETRY_SECONDS": "tuning: Settings' default applies",
    "CHANGE_WINDOW_EVENTS": "tuning: Settings' default applies",
    "CHANGE_WINDOW_BYTES": "tuning: Settings' default applies",
    "CHANGE_WINDOW_SECONDS": "tuning: Settings' default applies",
    "CHANGE_AWAIT_MS": "tuning: Settings' default applies",
    "CHANGE_LEASE_SECONDS": "tuning: Settings' default applies",
    "REPLICATOR_RETENTION_DAYS": "the local replicate command only; Fabric replicates on Azure",
    "REPLICATOR_INTERVAL_SECONDS": "the local replicate command only; Fabric replicates on Azure",
    "REBUILD_DROP_WAIT_SECONDS": "the template sets the Fabric ids, so Fabric says when a table "
    "is dropped; the wait applies only without them",
    "REPLICATOR_BACKLOG_FILES": "tuning: Settings' default applies",
    "REPLICATOR_BACKLOG_CHECK_SECONDS": "tuning: Settings' default applies",
    "PROGRESS_SECONDS": "the command line's progress lines only; Functions log per tick",
    "COLUMN_BUDGET": "tuning: Settings' default applies (under T-SQL's 1,024 columns)",
}
# Settings the engine treats as secret because they may be connection strings with a key; the
# template sets them to plain endpoint URLs read with the identity, so they need no Key Vault.
SECRET_SETTINGS_SET_AS_URLS = {
    "LANDING_ZONE": "the OneLake URL of the mirrored database (parameter landingZoneUrl)",
    "STATE_STORE": "the table endpoint of the storage account, with the table name",
}
# Settings the Functions host itself reads, not the engine.
HOST_SETTING = re.compile(r"^(AzureWebJobsStorage__\w+|APPLICATIONINSIGHTS_\w+)$")
KEY_VAULT_REFERENCE = re.compile(r"^@Microsoft\.KeyVault\(SecretUri=\$\{.+\}\)$")
PLAIN_SECRET = re.compile(r"AccountKey=|SharedAccessSignature=|[?&]sig=|://[^/\s'@:]+:[^/\s'@]+@")
ROLES = {  # built-in role definition ids, the same in every tenant
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}


def scopes(scope: Scope | None = None) -> Iterator[Scope]:
    """main.bicep and every module it deploys, each with what its caller passes."""
    scope = scope or Scope(template(MAIN))
    yield scope
    for module in scope.template.modules:
        yield from scopes(scope.module_scope(module))


def function_app() -> tuple[Mapping[str, Any], Scope]:
    (found,) = [
        (site, scope)
        for scope in scopes()
        for site in scope.template.resources_of_type("Microsoft.Web/sites").values()
    ]
    return found


def app_settings() -> dict[str, tuple[Expression, Scope]]:
    site, scope = function_app()
    assert "appSettings" not in body(site)["properties"].get("siteConfig", {})
    (config,) = [
        body(resource)
        for resource in scope.template.resources_of_type("Microsoft.Web/sites/config").values()
        if body(resource)["name"] == "appsettings"
    ]
    return object_entries(config["properties"], scope)


def literal(expression: Expression, scope: Scope) -> Expression:
    value, _ = resolve(expression, scope)
    return value


def function_app_binding_settings() -> set[str]:
    """App settings function_app.py's bindings name: %NAME% expressions and connections."""
    tree = ast.parse((ROOT / "function_app.py").read_text())
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    # The queue triggers' connection is chosen from the app settings when the worker indexes
    # the functions: here, from the settings the template writes.
    constants["QUEUE_CONNECTION"] = queue_connection(dict.fromkeys(app_settings(), "set"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.keyword):
            continue
        value = node.value
        text = (
            constants.get(value.id)
            if isinstance(value, ast.Name)
            else getattr(value, "value", None)
        )
        if not isinstance(text, str):
            continue
        if node.arg == "connection":
            names.add(text)
        names |= set(re.findall(r"%(\w+)%", text))  # binding expressions: schedule="%NAME%"
    return names


def test_every_template_parses():
    parsed = {t.path.relative_to(BICEP).as_posix(): t for t in all_templates()}
    assert set(parsed) == {
        "main.bicep",
        "modules/functionapp.bicep",
        "modules/keyvault.bicep",
        "modules/monitoring.bicep",
        "modules/network.bicep",
        "modules/storage.bicep",
    }
    assert all(t.resources for t in parsed.values())


def test_module_calls_pass_exactly_the_parameters_modules_declare():
    calls = 0
    for caller in all_templates():
        for name, module in caller.modules.items():
            declared = caller.module(name).params
            passed = set(body(module)["params"])
            required = {p for p, spec in declared.items() if spec["default"] is None}
            assert passed <= set(declared), (name, sorted(passed - set(declared)))
            assert required <= passed, (name, sorted(required - passed))
            calls += 1
    assert calls == 5


def test_every_module_output_read_exists():
    read = 0
    for caller in all_templates():
        for expression in caller.expressions():
            for event in walk(expression, caller.symbols):
                if isinstance(event, Reference) and event.chain[0] in caller.modules:
                    module, *path = event.chain
                    if path[:1] == ["outputs"]:
                        assert path[1] in caller.module(module).outputs, event.chain
                        read += 1
    assert read >= 10  # the walk does see main.bicep's module outputs


def test_every_engine_setting_is_decided():
    settings = app_settings()
    engine = {spec.name for spec in SETTINGS}
    undecided = sorted(engine - set(settings) - set(LEFT_UNSET_ON_AZURE))
    assert not undecided, f"set {undecided} in main.bicep or list them in LEFT_UNSET_ON_AZURE"
    assert set(LEFT_UNSET_ON_AZURE) <= engine  # no stale entry
    assert not set(LEFT_UNSET_ON_AZURE) & set(settings)
    others = {name for name in settings if name not in engine}
    assert {name for name in others if not HOST_SETTING.match(name)} == set()


def test_every_setting_the_bindings_name_is_set():
    settings = set(app_settings())
    named = function_app_binding_settings()
    assert "AzureWebJobsStorage" in named  # the queue trigger's connection
    for name in named:  # a connection may be given as NAME__accountName etc. (identity-based)
        assert name in settings or any(s.startswith(f"{name}__") for s in settings), name


def test_app_authenticates_with_its_user_assigned_identity():
    settings = app_settings()
    assert literal(*settings["AZURE_AUTH"]) == "managed-identity" in AUTH_MODES
    assert is_reference_to(*settings["AZURE_CLIENT_ID"], *IDENTITY_CLIENT_ID)
    assert literal(*settings["AzureWebJobsStorage__credential"]) == "managedidentity"
    assert is_reference_to(*settings["AzureWebJobsStorage__clientId"], *IDENTITY_CLIENT_ID)
    assert template(MAIN).resources["identity"]["type"] == (
        "Microsoft.ManagedIdentity/userAssignedIdentities"
    )

    site, scope = function_app()
    identity = body(site)["identity"]
    assert identity["type"] == "UserAssigned"
    (assigned,) = identity["userAssignedIdentities"]
    assert is_reference_to(assigned, scope, *IDENTITY_ID)
    properties = body(site)["properties"]
    assert is_reference_to(properties["keyVaultReferenceIdentity"], scope, *IDENTITY_ID)
    package = properties["functionAppConfig"]["deployment"]["storage"]["authentication"]
    assert package["type"] == "UserAssignedIdentity"
    assert is_reference_to(package["userAssignedIdentityResourceId"], scope, *IDENTITY_ID)


def role_grants() -> set[tuple[str, str]]:
    """(scope resource type, role definition id) of every role assignment to the identity."""
    grants = set()
    for scope in scopes():
        resources = scope.template.resources
        for resource in resources.values():
            if resource["type"] != "Microsoft.Authorization/roleAssignments":
                continue
            loop = resource["config"].get("loop_type")
            assignment = body(resource)
            properties = assignment["properties"]
            assert is_reference_to(properties["principalId"], scope, *IDENTITY_PRINCIPAL_ID)
            role = properties["roleDefinitionId"]["function"]
            assert role["type"] == "subscription_resource_id"
            assert role["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
            role_id = role["parameters"]["resource_name_1"]
            if loop and role_id == loop["detail"]["item_name"]:
                role_ids = literal(loop["detail"]["array_name"], scope)
            else:
                role_ids = [role_id]
            target = resources[assignment["scope"]]["type"]
            grants |= {(target, literal(role_id, scope)) for role_id in role_ids}
    return grants


def test_identity_holds_data_roles_on_storage_key_vault_and_telemetry():
    storage, vault, insights = (
        "Microsoft.Storage/storageAccounts",
        "Microsoft.KeyVault/vaults",
        "Microsoft.Insights/components",
    )
    assert role_grants() >= {
        (storage, ROLES["Storage Blob Data Owner"]),
        (storage, ROLES["Storage Queue Data Contributor"]),
        (storage, ROLES["Storage Table Data Contributor"]),
        (vault, ROLES["Key Vault Secrets User"]),
        (insights, ROLES["Monitoring Metrics Publisher"]),
    }
    (vault_resource,) = [
        resource
        for scope in scopes()
        for resource in scope.template.resources_of_type(vault).values()
    ]
    assert body(vault_resource)["properties"]["enableRbacAuthorization"] is True


def test_storage_refuses_shared_keys_and_everything_is_https_with_tls_1_2():
    (account,) = [
        body(resource)["properties"]
        for scope in scopes()
        for resource in scope.template.resources_of_type(
            "Microsoft.Storage/storageAccounts"
        ).values()
    ]
    assert account["allowSharedKeyAccess"] is False
    assert account["defaultToOAuthAuthentication"] is True
    assert account["allowBlobPublicAccess"] is False
    assert account["supportsHttpsTrafficOnly"] is True
    assert account["minimumTlsVersion"] in {"TLS1_2", "TLS1_3"}

    site, _ = function_app()
    properties = body(site)["properties"]
    assert properties["httpsOnly"] is True
    assert tuple(map(int, properties["siteConfig"]["minTlsVersion"].split("."))) >= (1, 2)


def test_no_secret_in_app_settings_outputs_or_plain_parameters():
    for name, (value, scope) in app_settings().items():
        assert not is_secret(value, scope), name
    for scope in scopes():
        for name, output in scope.template.outputs.items():
            assert not is_secret(output["value"], scope), (scope.template.path.name, name)

    # A secret reaches a module only through a @secure() parameter (kept out of the
    # deployment history); the MongoDB URI is one such, which also proves the check sees it.
    secret_passes = 0
    for scope in scopes():
        for module, call in scope.template.modules.items():
            for param, value in body(call)["params"].items():
                if is_secret(value, scope):
                    assert scope.template.module(module).is_secure(param), (module, param)
                    secret_passes += 1
    assert secret_passes >= 1

    for template_ in all_templates():
        for expression in template_.expressions():
            leaks = [text for text in string_leaves(expression) if PLAIN_SECRET.search(text)]
            assert not leaks, template_.path.name


def test_secret_settings_come_from_key_vault_or_are_plain_endpoints():
    settings = app_settings()
    secret = {spec.name for spec in SETTINGS if spec.secret and spec.name in settings}
    assert set(SECRET_SETTINGS_SET_AS_URLS) <= secret
    from_key_vault = secret - set(SECRET_SETTINGS_SET_AS_URLS)
    assert "MONGODB_URI" in from_key_vault
    for name in from_key_vault:
        value, scope = resolve(*settings[name])
        assert isinstance(value, str) and KEY_VAULT_REFERENCE.match(value), name
        (address,) = interpolations(value)
        (head, *path) = accessor_chain(parse_expression(address))
        assert scope.template.resources[head]["type"] == KEY_VAULT_SECRET
        assert path == ["properties", "secretUri"]  # versionless: the app follows rotations


def test_flex_consumption_python_app_without_classic_runtime_settings():
    settings = app_settings()
    assert not {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"} & set(settings)
    site, scope = function_app()
    (plan,) = scope.template.resources_of_type("Microsoft.Web/serverfarms").values()
    assert body(plan)["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert body(site)["properties"]["functionAppConfig"]["runtime"]["name"] == "python"


def test_queue_and_state_table_are_the_ones_the_engine_uses():
    main = Scope(template(MAIN))
    storage = main.module_scope("storage")
    (queue,) = storage.template.resources_of_type(
        "Microsoft.Storage/storageAccounts/queueServices/queues"
    ).values()
    assert literal(body(queue)["name"], storage) == QUEUE_NAME
    (table,) = storage.template.resources_of_type(
        "Microsoft.Storage/storageAccounts/tableServices/tables"
    ).values()
    table_name = literal(body(table)["name"], storage)
    url = f"https://account.table.core.windows.net/{table_name}"
    assert parse_state_location(url).table_name == table_name
    state_store, scope = resolve(*app_settings()["STATE_STORE"])
    assert state_store == "${storage.properties.primaryEndpoints.table}${stateTable.name}"
    assert scope.template.resources["stateTable"] is table


def function_timeout_seconds() -> int:
    hours, minutes, seconds = json.loads((ROOT / "host.json").read_text())["functionTimeout"].split(
        ":"
    )
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds)


def test_timer_schedule_and_budget_come_from_parameters_inside_the_function_timeout():
    settings = app_settings()
    main = template(MAIN)
    schedule, scope = resolve(*settings["CHANGE_SCHEDULE"])
    assert schedule == "changeSchedule" and scope.template is main
    budget, _ = resolve(*settings["CHANGE_BUDGET_SECONDS"])
    assert budget == {
        "function": {"type": "string", "parameters": {"value_to_convert": "changeBudgetSeconds"}}
    }
    _, example = parse_parameters_file(BICEP / "main.bicepparam")
    for value in (main.params["changeSchedule"]["default"], example["changeSchedule"]):
        assert load_settings({"CHANGE_SCHEDULE": value}).get("CHANGE_SCHEDULE") == value
    assert main.params["changeSchedule"]["default"] == SPECS["CHANGE_SCHEDULE"].default

    spec = main.params["changeBudgetSeconds"]
    assert str(spec["default"]) == SPECS["CHANGE_BUDGET_SECONDS"].default
    limits = {d["type"]: d["argument"] for d in spec["decorators"] if "value" in d["type"]}
    low, high = INTEGER_LIMITS["CHANGE_BUDGET_SECONDS"]
    assert low <= limits["min_value"] <= limits["max_value"] <= high
    # A tick may overrun its budget by a window and its publishes: the largest budget the
    # template accepts stays well inside the host's timeout, so a tick is never killed mid-publish.
    assert 2 * limits["max_value"] <= function_timeout_seconds()


def check_against_decorators(name: str, value: Expression, spec: Mapping[str, Any]) -> None:
    kind = {"string": str, "int": int, "bool": bool, "object": dict, "array": list}
    if isinstance(value, dict) and ("function" in value or "operator" in value):
        return  # computed when the deployment runs
    if spec["type"] == "string" and isinstance(value, str):
        assert "${" not in value, name
    assert isinstance(value, kind[spec["type"]]), name
    for decorator in spec["decorators"]:
        rule, argument = decorator["type"], decorator.get("argument")
        if rule == "allowed":
            assert value in argument, name
        elif rule == "min_length":
            assert len(value) >= argument, name
        elif rule == "max_length":
            assert len(value) <= argument, name
        elif rule == "min_value":
            assert value >= argument, name
        elif rule == "max_value":
            assert value <= argument, name


def test_parameters_example_sets_every_parameter_and_no_secret():
    using, values = parse_parameters_file(BICEP / "main.bicepparam")
    assert (BICEP / using).resolve() == MAIN
    main = template(MAIN)
    assert set(values) == set(main.params)
    for name, value in values.items():
        spec = main.params[name]
        if main.is_secure(name):  # read when the command runs, never written in the file
            function = value.get("function", {}) if isinstance(value, dict) else {}
            assert function.get("type") == "readEnvironmentVariable", name
            assert list(function["parameters"]) == ["arg_1"], name  # no default value
        else:
            check_against_decorators(name, value, spec)
        assert not [text for text in string_leaves(value) if PLAIN_SECRET.search(text)], name


def or_operands(expression: Expression) -> list[Expression]:
    """The operands of a chain of ``||`` (the expression itself when it is not one)."""
    operator = expression.get("operator", {}) if isinstance(expression, dict) else {}
    if operator.get("type") != "or":
        return [expression]
    return [leaf for operand in operator["operands"].values() for leaf in or_operands(operand)]


def test_a_nat_gateway_gives_the_app_subnet_one_static_outbound_ip():
    # Issue 16 item 13: Flex Consumption has no fixed outbound address, so an Atlas IP access
    # list needs one: a NAT gateway with a static public IP on the integrated subnet.
    main = template(MAIN)
    assert main.params["enableNatGateway"]["default"] is False  # opt-in: it costs per hour
    assert "enableNatGateway" in or_operands(main.variables["deployNetwork"]["value"])
    assert body(main.modules["network"])["params"]["enableNatGateway"] == "enableNatGateway"
    assert "outboundIpAddress" in main.outputs

    network = template(BICEP / "modules" / "network.bicep")
    (ip_name,) = network.resources_of_type("Microsoft.Network/publicIPAddresses")
    (nat_name,) = network.resources_of_type("Microsoft.Network/natGateways")
    ip, nat = body(network.resources[ip_name]), body(network.resources[nat_name])
    assert ip["sku"]["name"] == "Standard"  # NAT gateway takes Standard public IPs only
    assert ip["properties"]["publicIPAllocationMethod"] == "Static"
    assert nat["sku"]["name"] == "Standard"
    (address,) = nat["properties"]["publicIpAddresses"]
    assert accessor_chain(address["id"]) == [ip_name, "id"]

    (app_subnet,) = [
        subnet
        for subnet in body(network.resources["vnet"])["properties"]["subnets"]
        if subnet["name"] == "appSubnetName"
    ]
    choice = app_subnet["properties"]["natGateway"]["operator"]["operands"]
    assert choice["condition"] == "enableNatGateway"
    assert accessor_chain(choice["true_value"]["id"]) == [nat_name, "id"]
    assert "outboundIpAddress" in network.outputs


def test_the_parameters_file_counts_its_fill_in_markers_right():
    # Issue 16 item 14: the header said "three marked FILL IN" over four markers.
    text = (BICEP / "main.bicepparam").read_text()
    said = re.search(r"fill in the (\w+) marked FILL IN", text)
    assert said is not None
    numbers = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
    assert numbers[said[1]] == len(re.findall(r"^// FILL IN", text, re.MULTILINE))
