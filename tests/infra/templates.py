"""infra/bicep parsed with pycep-parser, and the questions the Bicep tests ask of the trees.

pycep gives a template as nested dicts: ``parameters``, ``variables``, ``resources``, ``modules``
and ``outputs``, each expression a tree of ``operator`` and ``function`` nodes over plain values.
It does not tell a string literal from an identifier (both are ``str``), so a bare string is
taken as a reference when it names a symbol of its template; and it keeps an interpolated string
(``'st${suffix}'``) as written, so each ``${...}`` is parsed again here as an expression.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pycep import BicepParser

BICEP = Path(__file__).resolve().parents[2] / "infra" / "bicep"
PARSER = BicepParser()
KEY_VAULT_SECRET = "Microsoft.KeyVault/vaults/secrets"
# What may be read of a Key Vault secret resource without reading the secret.
SECRET_ADDRESS = {
    ("name",),
    ("id",),
    ("properties", "secretUri"),
    ("properties", "secretUriWithVersion"),
}
ACCESSORS = {"property_accessor", "index_accessor", "function_accessor"}

Expression = Any  # a pycep expression tree: str, int, bool, None, list or dict


@dataclass(frozen=True)
class Template:
    path: Path
    tree: Mapping[str, Any] = field(repr=False)

    def section(self, name: str) -> Mapping[str, Any]:
        return self.tree.get(name) or {}

    @property
    def params(self) -> Mapping[str, Any]:
        return self.section("parameters")

    @property
    def variables(self) -> Mapping[str, Any]:
        return self.section("variables")

    @property
    def resources(self) -> Mapping[str, Any]:
        return self.section("resources")

    @property
    def modules(self) -> Mapping[str, Any]:
        return self.section("modules")

    @property
    def outputs(self) -> Mapping[str, Any]:
        return self.section("outputs")

    @property
    def symbols(self) -> set[str]:
        return {*self.params, *self.variables, *self.resources, *self.modules}

    def is_secure(self, param: str) -> bool:
        return any(d["type"] == "secure" for d in self.params[param]["decorators"])

    def module(self, name: str) -> Template:
        return template(self.path.parent / self.modules[name]["detail"]["path"])

    def resources_of_type(self, resource_type: str) -> dict[str, Mapping[str, Any]]:
        return {n: r for n, r in self.resources.items() if r["type"] == resource_type}

    def expressions(self) -> Iterator[Expression]:
        """Every expression of the template: parameter defaults, variables, resources, modules
        and outputs."""
        yield from (p["default"] for p in self.params.values())
        yield from (v["value"] for v in self.variables.values())
        yield from (r["config"] for r in self.resources.values())
        yield from (m["config"] for m in self.modules.values())
        yield from (o["value"] for o in self.outputs.values())


def body(declaration: Mapping[str, Any]) -> Mapping[str, Any]:
    """A resource's or module's own properties, inside its ``if`` condition or ``for`` loop."""
    config = declaration["config"]
    while "condition" in config or "loop_type" in config:
        config = config["config"]
    return config


@cache
def template(path: Path) -> Template:
    return Template(path, PARSER.parse(file_path=path))


def all_templates() -> list[Template]:
    return [template(path) for path in sorted(BICEP.rglob("*.bicep"))]


MAIN = BICEP / "main.bicep"


@cache
def parse_expression(text: str) -> Expression:
    return PARSER.parse(text=f"var expression = {text}\n")["variables"]["expression"]["value"]


def interpolations(text: str) -> Iterator[str]:
    """The expressions inside ``${...}`` of an interpolated string."""
    start = text.find("${")
    while start != -1:
        depth, position, quoted = 1, start + 2, False
        while depth:
            char = text[position]
            if char == "'" and text[position - 1] != "\\":
                quoted = not quoted
            elif not quoted:
                depth += {"{": 1, "}": -1}.get(char, 0)
            position += 1
        yield text[start + 2 : position - 1]
        start = text.find("${", position)


def accessor_chain(expression: Expression) -> list[Expression]:
    """``a.b[0].c()`` as ``['a', 'b', '[0]', 'c()']``; a head that is not a name stays a tree."""
    if isinstance(expression, dict) and expression.get("operator", {}).get("type") in ACCESSORS:
        operator = expression["operator"]
        operands = operator["operands"]
        head = accessor_chain(operands["operand_1"])
        if operator["type"] == "property_accessor":
            return head + accessor_chain(operands["operand_2"])
        if operator["type"] == "index_accessor":
            return [*head, f"[{operands['operand_2']}]"]
        return [*head, f"{operands['func_name']}()"]
    return [expression]


@dataclass(frozen=True)
class Reference:
    chain: tuple[str, ...]  # a symbol of the template, then the properties read from it


@dataclass(frozen=True)
class Call:
    function: str


def walk(expression: Expression, symbols: set[str]) -> Iterator[Reference | Call]:
    """The symbols an expression references and the functions it calls."""
    if isinstance(expression, str):
        if expression in symbols:
            yield Reference((expression,))
        for inner in interpolations(expression):
            yield from walk(parse_expression(inner), symbols)
    elif isinstance(expression, list):
        for item in expression:
            yield from walk(item, symbols)
    elif isinstance(expression, dict):
        if expression.get("operator", {}).get("type") in ACCESSORS:
            chain = accessor_chain(expression)
            if isinstance(chain[0], str) and chain[0] in symbols:
                yield Reference(tuple(chain[: next_tree(chain)]))
            else:
                yield from walk(chain[0], symbols)
            calls = [p for p in chain if isinstance(p, str) and p.endswith("()")]
            yield from (Call(part[:-2]) for part in calls)
        elif "operator" in expression:
            yield from walk(list(expression["operator"]["operands"].values()), symbols)
        elif "function" in expression:
            function = expression["function"]
            parameters = function.get("parameters") or {}
            yield Call(parameters.get("func_name") or function["type"])
            yield from walk(list(parameters.values()), symbols)
        else:  # an object literal; a key may be interpolated ('${identityResourceId}')
            yield from walk([key for key in expression if "${" in key], symbols)
            yield from walk(list(expression.values()), symbols)


def next_tree(chain: list[Expression]) -> int:
    return next((i for i, part in enumerate(chain) if not isinstance(part, str)), len(chain))


@dataclass(frozen=True)
class Scope:
    """A template, and what its caller passed for its parameters (empty for main.bicep)."""

    template: Template
    passed: Mapping[str, tuple[Expression, Scope]] = field(default_factory=dict, repr=False)

    def module_scope(self, module: str) -> Scope:
        params = body(self.template.modules[module])["params"]
        return Scope(self.template.module(module), {n: (e, self) for n, e in params.items()})


def resolve(expression: Expression, scope: Scope) -> tuple[Expression, Scope]:
    """Follow an expression through variables, parameters passed by the caller and module
    outputs to the expression that makes the value."""
    template = scope.template
    chain = accessor_chain(expression)
    if isinstance(expression, str) and expression in template.variables:
        return resolve(template.variables[expression]["value"], scope)
    if isinstance(expression, str) and expression in scope.passed:
        return resolve(*scope.passed[expression])
    if len(chain) == 3 and chain[0] in template.modules and chain[1] == "outputs":
        inner = scope.module_scope(chain[0])
        return resolve(inner.template.outputs[chain[2]]["value"], inner)
    return expression, scope


def object_entries(expression: Expression, scope: Scope) -> dict[str, tuple[Expression, Scope]]:
    """The properties of an object expression (a literal, a variable, a parameter or union())."""
    expression, scope = resolve(expression, scope)
    if isinstance(expression, dict) and "function" in expression:
        function = expression["function"]
        assert function["type"] == "union", f"cannot list the properties of {function['type']}()"
        merged: dict[str, tuple[Expression, Scope]] = {}
        for argument in function["parameters"].values():
            merged |= object_entries(argument, scope)
        return merged
    assert isinstance(expression, dict) and "operator" not in expression, expression
    return {name: (value, scope) for name, value in expression.items()}


def is_secret(expression: Expression, scope: Scope) -> bool:
    """Whether a value derives from a @secure() parameter, a list*() call (keys, connection
    strings) or the value of a Key Vault secret, through variables, parameters and modules."""
    template = scope.template
    for event in walk(expression, template.symbols):
        if isinstance(event, Call):
            if event.function.startswith("list"):
                return True
            continue
        head, *path = event.chain
        if head in template.params:
            if template.is_secure(head) or (
                head in scope.passed and is_secret(*scope.passed[head])
            ):
                return True
        elif head in template.variables:
            if is_secret(template.variables[head]["value"], scope):
                return True
        elif head in template.modules and path[:1] == ["outputs"] and len(path) > 1:
            inner = scope.module_scope(head)
            if is_secret(inner.template.outputs[path[1]]["value"], inner):
                return True
        elif template.resources.get(head, {}).get("type") == KEY_VAULT_SECRET:
            if tuple(path) not in SECRET_ADDRESS:
                return True
    return False


def string_leaves(expression: Expression) -> Iterator[str]:
    if isinstance(expression, str):
        yield expression
    elif isinstance(expression, list):
        for item in expression:
            yield from string_leaves(item)
    elif isinstance(expression, dict):
        yield from (key for key in expression if isinstance(key, str))
        for value in expression.values():
            yield from string_leaves(value)


def is_reference_to(expression: Expression, scope: Scope, *chain: str) -> bool:
    """Whether the value resolves, in main.bicep, to exactly ``chain`` (e.g. identity.id)."""
    expression, scope = resolve(expression, scope)
    if isinstance(expression, str):
        inner = list(interpolations(expression))
        if expression.startswith("'${") and len(inner) == 1:  # an interpolated object key
            return is_reference_to(parse_expression(inner[0]), scope, *chain)
    return scope.template.path == MAIN and accessor_chain(expression) == list(chain)


def parse_parameters_file(path: Path) -> tuple[str, dict[str, Expression]]:
    """A .bicepparam file: its ``using`` target and its parameter values.

    pycep-parser reads templates, not parameter files; a parameter file's ``param name = value``
    lines are ``var name = value`` lines of a template, so the values go through the same parser.
    """
    text = path.read_text()
    using = re.search(r"^using\s+'([^']+)'\s*$", text, re.MULTILINE)
    assert using, f"{path.name} has no using line"
    body = re.sub(r"^using\s.*$", "", text, flags=re.MULTILINE)
    body = re.sub(r"^param(\s+\w+\s*=)", r"var\1", body, flags=re.MULTILINE)
    assert not re.search(r"^param\s", body, re.MULTILINE), "a param line without a value"
    variables = PARSER.parse(text=body).get("variables") or {}
    return using.group(1), {name: entry["value"] for name, entry in variables.items()}
