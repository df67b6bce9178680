"""Updates written as an aggregation pipeline (`u: [{$set: ...}, ...]`, MongoDB 4.2+).

Manual, "Updates with Aggregation Pipeline": the stages allowed are `$addFields`/`$set`,
`$project`/`$unset` and `$replaceRoot`/`$replaceWith`; the pipeline's output replaces the
document, keeping its `_id` (pipeline_executor.cpp applies it through ObjectReplaceExecutor).
Expressions are those the sandbox evaluates (`query.evaluate`: literals, `$field` paths, `$literal`,
`$$ROOT`/`$$CURRENT`/`$$REMOVE`); an operator it does not implement is refused (115).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mongodb_sandbox import query
from mongodb_sandbox.errors import CommandError, ErrorCode

_ALLOWED = frozenset({"$addFields", "$set", "$project", "$unset", "$replaceRoot", "$replaceWith"})
# Stages the server knows but refuses in an update (each one's constraints say
# isAllowedWithinUpdatePipeline false): InvalidOptions rather than an unrecognised stage.
_OTHER_STAGES = frozenset(
    {
        "$bucket", "$bucketAuto", "$changeStream", "$changeStreamSplitLargeEvent",
        "$collStats", "$count", "$currentOp", "$densify", "$documents", "$facet", "$fill",
        "$geoNear", "$graphLookup", "$group", "$indexStats", "$limit", "$listLocalSessions",
        "$listSearchIndexes", "$listSessions", "$lookup", "$match", "$merge", "$out",
        "$planCacheStats", "$redact", "$sample", "$search", "$searchMeta", "$setWindowFields",
        "$skip", "$sort", "$sortByCount", "$unionWith", "$unwind", "$vectorSearch",
    }
)  # fmt: skip


def is_pipeline(update: Any) -> bool:
    """An update given as an array is a pipeline (write_ops: `u` is an object or an array)."""
    return isinstance(update, list)


def validate(pipeline: list[Any]) -> None:
    """Refuse what the server refuses when it parses the update (pipeline_executor.cpp)."""
    for stage in pipeline:
        if not isinstance(stage, Mapping) or len(stage) != 1:
            raise CommandError(
                ErrorCode.STAGE_NOT_ONE_FIELD,
                "A pipeline stage specification object must contain exactly one field.",
            )
        name = next(iter(stage))
        if name in _ALLOWED:
            continue
        if name in _OTHER_STAGES:
            raise CommandError(
                ErrorCode.INVALID_OPTIONS, f"{name} is not allowed to be used within an update"
            )
        raise CommandError(
            ErrorCode.UNRECOGNIZED_PIPELINE_STAGE, f"Unrecognized pipeline stage name: '{name}'"
        )


def apply(doc: Mapping[str, Any], pipeline: list[Any]) -> dict[str, Any]:
    """The document the pipeline makes of `doc`, its `_id` first and kept if the output lacks
    one (ObjectReplaceExecutor); a changed `_id` is the caller's ImmutableField error."""
    validate(pipeline)
    current = dict(doc)
    for stage in pipeline:
        name, spec = next(iter(stage.items()))
        current = _stage(name, spec, current)
    if "_id" in doc and "_id" not in current:
        return {"_id": doc["_id"], **current}
    if "_id" in current:
        return {"_id": current["_id"], **{k: v for k, v in current.items() if k != "_id"}}
    return current


def _stage(name: str, spec: Any, doc: dict[str, Any]) -> dict[str, Any]:
    if name in ("$addFields", "$set"):
        if not isinstance(spec, Mapping):
            raise CommandError(
                ErrorCode.FAILED_TO_PARSE, f"{name} specification stage must be an object"
            )
        return add_fields(doc, spec)
    if name == "$project":
        return query.project(doc, spec)
    if name == "$unset":
        fields = [spec] if isinstance(spec, str) else list(spec)
        return query.project(doc, dict.fromkeys(fields, 0))
    expression = spec.get("newRoot") if name == "$replaceRoot" else spec
    root = query.evaluate(doc, expression)
    if not isinstance(root, Mapping):
        shown = "MISSING" if root is query.MISSING else repr(root)
        raise CommandError(
            ErrorCode.NEW_ROOT_NOT_OBJECT,
            f"'newRoot' expression must evaluate to an object, but resulting value was: {shown}",
        )
    return dict(root)


# -- $addFields --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Computed:
    expression: Any


_Tree = dict[str, "_Computed | _Tree"]


def add_fields(doc: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """`$addFields`/`$set` as the manual describes it: a dotted name or a nested document of
    fields adds to the embedded document there (to each element when it is an array of
    documents) rather than replacing it; a field whose expression is missing (`$$REMOVE`, a
    missing field) is left out; new fields go last, replaced ones keep their place. Every
    expression is evaluated against the whole document."""
    return _apply(doc, doc, _tree(spec))


def _tree(spec: Mapping[str, Any]) -> _Tree:
    tree: _Tree = {}
    for path, expression in spec.items():
        *parents, leaf = path.split(".")
        node = tree
        for part in parents:
            child = node.setdefault(part, {})
            if isinstance(child, _Computed):
                raise _path_collision(path)
            node = child
        if _is_nested_spec(expression):
            sub = _tree(expression)
            existing = node.setdefault(leaf, {})
            if isinstance(existing, _Computed):
                raise _path_collision(path)
            existing.update(sub)
        elif leaf in node:
            raise _path_collision(path)
        else:
            node[leaf] = _Computed(expression)
    return tree


def _is_nested_spec(expression: Any) -> bool:
    # A document of fields, not an expression ({$op: ...}, {$literal: ...}) nor an empty {}.
    return (
        isinstance(expression, Mapping)
        and bool(expression)
        and not query.is_operator_document(expression)
    )


def _path_collision(path: str) -> CommandError:
    return CommandError(
        ErrorCode.FAILED_TO_PARSE, f"Invalid $addFields :: path collision at {path}"
    )


def _apply(root: Mapping[str, Any], current: Mapping[str, Any], tree: _Tree) -> dict[str, Any]:
    out = dict(current)
    for name, node in tree.items():
        if isinstance(node, _Computed):
            value = query.evaluate(root, node.expression)
            if value is query.MISSING:
                out.pop(name, None)
            else:
                out[name] = value
        else:
            out[name] = _apply_to_value(root, current.get(name, query.MISSING), node)
    return out


def _apply_to_value(root: Mapping[str, Any], value: Any, tree: _Tree) -> Any:
    # ProjectionNode::applyExpressionsToValue: into documents, over arrays element by element,
    # and anything else becomes a new document of the computed fields.
    if isinstance(value, Mapping):
        return _apply(root, value, tree)
    if isinstance(value, list):
        return [_apply_to_value(root, element, tree) for element in value]
    return _apply(root, {}, tree)
