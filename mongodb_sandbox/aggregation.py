"""The aggregation stages the sandbox supports, over documents already selected from a collection.

Items flow through the pipeline either still encoded (`RawBSONDocument`) or as dicts; stages
that only count or reorder (`$skip`, `$limit`, `$sample`, `$count`, counting `$group`) never
decode, so `countDocuments` over a large collection stays cheap.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128
from bson.raw_bson import RawBSONDocument

from mongodb_sandbox import ordering, query, storage
from mongodb_sandbox.errors import CommandError, ErrorCode, unsupported

Item = RawBSONDocument | dict[str, Any]


def as_dict(item: Item) -> dict[str, Any]:
    return storage.decode(item) if isinstance(item, RawBSONDocument) else item


def as_raw(item: Item) -> RawBSONDocument:
    return item if isinstance(item, RawBSONDocument) else storage.encode(item)


def run(items: list[Item], pipeline: list[Mapping[str, Any]]) -> list[RawBSONDocument]:
    """Apply the stages in order and return encoded results."""
    for stage in pipeline:
        if not isinstance(stage, Mapping) or len(stage) != 1:
            raise CommandError(
                ErrorCode.STAGE_NOT_ONE_FIELD,
                "A pipeline stage specification object must contain exactly one field.",
            )
        name, spec = next(iter(stage.items()))
        items = _stage(name, spec, items)
    return [as_raw(item) for item in items]


def _stage(name: str, spec: Any, items: list[Item]) -> list[Item]:
    if name == "$match":
        return [d for d in map(as_dict, items) if query.matches(d, spec)]
    if name == "$sort":
        return list(query.sort_documents(items, spec, as_dict))
    if name == "$skip":
        return items[int(spec) :]
    if name == "$limit":
        return items[: int(spec)]
    if name == "$sample":
        size = int(spec.get("size", 0))
        return random.sample(items, min(size, len(items)))
    if name == "$count":
        return [{str(spec): len(items)}] if items else []
    if name == "$project":
        return [query.project(as_dict(d), spec) for d in items]
    if name == "$unset":
        fields = [spec] if isinstance(spec, str) else spec
        return [query.project(as_dict(d), dict.fromkeys(fields, 0)) for d in items]
    if name in ("$addFields", "$set"):
        return [_add_fields(as_dict(d), spec) for d in items]
    if name == "$unwind":
        return _unwind(items, spec)
    if name == "$group":
        return _group(items, spec)
    if name == "$bucketAuto":
        return _bucket_auto(items, spec)
    raise unsupported(f"aggregation stage {name}")


def _add_fields(doc: dict[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    for path, expression in spec.items():
        value = query.evaluate(doc, expression)
        if value is not query.MISSING:
            query.set_path(doc, path, value)
    return doc


def _unwind(items: list[Item], spec: Any) -> list[Item]:
    path = spec if isinstance(spec, str) else spec["path"]
    keep_empty = isinstance(spec, Mapping) and spec.get("preserveNullAndEmptyArrays", False)
    out: list[Item] = []
    for doc in map(as_dict, items):
        value = query.get_path(doc, path[1:])
        if isinstance(value, list) and value:
            for element in value:
                copy = storage.decode(storage.encode(doc))
                query.set_path(copy, path[1:], element)
                out.append(copy)
        elif keep_empty or (value is not query.MISSING and value is not None and value != []):
            out.append(doc)
    return out


def _is_constant(expression: Any) -> bool:
    if isinstance(expression, str):
        return not expression.startswith("$")
    if isinstance(expression, Mapping):
        return all(_is_constant(v) for v in expression.values())
    return not isinstance(expression, list)


def _group(items: list[Item], spec: Mapping[str, Any]) -> list[Item]:
    if "_id" not in spec:
        raise CommandError(ErrorCode.GROUP_WITHOUT_ID, "a group specification must include an _id")
    accumulators = {name: acc for name, acc in spec.items() if name != "_id"}
    for name, accumulator in accumulators.items():
        if not isinstance(accumulator, Mapping) or len(accumulator) != 1:
            raise CommandError(
                ErrorCode.GROUP_FIELD_NOT_ACCUMULATOR,
                f"The field '{name}' must be an accumulator object",
            )
    counting_only = _is_constant(spec["_id"]) and all(
        next(iter(acc)) == "$count" or (next(iter(acc)) == "$sum" and _is_constant(acc["$sum"]))
        for acc in accumulators.values()
    )
    if counting_only:
        # Constant key and constant sums: no need to decode a single document.
        if not items:
            return []
        result: dict[str, Any] = {"_id": spec["_id"]}
        for name, acc in accumulators.items():
            result[name] = len(items) * (1 if "$count" in acc else acc["$sum"])
        return [result]
    groups: dict[ordering.SortKey, tuple[Any, list[dict[str, Any]]]] = {}
    for doc in map(as_dict, items):
        key_value = query.evaluate(doc, spec["_id"])
        key_value = None if key_value is query.MISSING else key_value
        groups.setdefault(ordering.sort_key(key_value), (key_value, []))[1].append(doc)
    out: list[Item] = []
    for key_value, docs in groups.values():
        row: dict[str, Any] = {"_id": key_value}
        for name, acc in accumulators.items():
            operator, expression = next(iter(acc.items()))
            row[name] = _accumulate(operator, [query.evaluate(d, expression) for d in docs])
        out.append(row)
    return out


def _accumulate(operator: str, values: list[Any]) -> Any:
    present = [v for v in values if v is not query.MISSING]
    numbers = [
        v for v in present if ordering.type_rank(v) == ordering.NUMBER and not isinstance(v, bool)
    ]
    if operator == "$count":
        return len(values)
    if operator == "$sum":
        if any(isinstance(v, Decimal128) for v in numbers):
            return Decimal128(
                sum(
                    (
                        Decimal(str(v)) if not isinstance(v, Decimal128) else v.to_decimal()
                        for v in numbers
                    ),
                    Decimal(0),
                )
            )
        return sum(numbers, 0)
    if operator == "$avg":
        return sum(numbers) / len(numbers) if numbers else None
    if operator in ("$min", "$max"):
        candidates = [v for v in present if v is not None]
        if not candidates:
            return None
        pick = min if operator == "$min" else max
        return pick(candidates, key=ordering.sort_key)
    if operator == "$first":
        return present[0] if values and values[0] is not query.MISSING else None
    if operator == "$last":
        return present[-1] if values and values[-1] is not query.MISSING else None
    if operator == "$push":
        return present
    if operator == "$addToSet":
        unique: dict[ordering.SortKey, Any] = {}
        for value in present:
            unique.setdefault(ordering.sort_key(value), value)
        return list(unique.values())
    raise unsupported(f"accumulator {operator}")


def _bucket_auto(items: list[Item], spec: Mapping[str, Any]) -> list[Item]:
    """Split values into N buckets of near-equal count; equal values never straddle a boundary."""
    buckets = spec.get("buckets")
    if not isinstance(buckets, int) or isinstance(buckets, bool) or buckets < 1:
        raise CommandError(
            ErrorCode.BUCKET_AUTO_BUCKETS_NOT_POSITIVE,
            "$bucketAuto 'buckets' must be a positive integer",
        )
    if "output" in spec or "granularity" in spec:
        raise unsupported("$bucketAuto output/granularity")
    values = []
    for doc in items:
        value = query.evaluate(as_dict(doc), spec["groupBy"])
        values.append(None if value is query.MISSING else value)
    values.sort(key=ordering.sort_key)
    keys = [ordering.sort_key(v) for v in values]
    total = len(values)
    out: list[Item] = []
    start = 0
    for number in range(1, buckets + 1):
        if start >= total:
            break
        end = max(round(number * total / buckets), start + 1)
        while end < total and keys[end] == keys[end - 1]:
            end += 1
        upper = values[end] if end < total else values[-1]
        out.append({"_id": {"min": values[start], "max": upper}, "count": end - start})
        start = end
    return out
