"""MongoDB query semantics on decoded documents: filters, update operators and projections.

Documents are plain dicts decoded from BSON. Field paths follow MongoDB's rules: a dotted path
walks into sub-documents and fans out over arrays, a leaf array matches when the array itself or
any element matches, and a missing field compares as null. Range operators are type-bracketed:
`{$gt: 5}` only ever matches numbers (MinKey/MaxKey bounds span every bracket).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.regex import Regex
from bson.timestamp import Timestamp

from mongodb_sandbox import ordering
from mongodb_sandbox.errors import CommandError, ErrorCode, unsupported

Document = dict[str, Any]


class _Missing:
    """Marks a path that leads nowhere (distinct from an explicit null)."""


MISSING: Any = _Missing()

_TYPE_NUMBERS = {
    "double": 1,
    "string": 2,
    "object": 3,
    "array": 4,
    "binData": 5,
    "undefined": 6,
    "objectId": 7,
    "bool": 8,
    "date": 9,
    "null": 10,
    "regex": 11,
    "javascript": 13,
    "javascriptWithScope": 15,
    "int": 16,
    "timestamp": 17,
    "long": 18,
    "decimal": 19,
    "minKey": -1,
    "maxKey": 127,
}
_RANK_TYPE_NUMBERS = {
    ordering.STRING: 2,
    ordering.OBJECT: 3,
    ordering.ARRAY: 4,
    ordering.BINARY: 5,
    ordering.OBJECTID: 7,
    ordering.BOOL: 8,
    ordering.DATE: 9,
    ordering.NULL: 10,
    ordering.REGEX: 11,
    ordering.CODE: 13,
    ordering.CODE_WITH_SCOPE: 15,
    ordering.TIMESTAMP: 17,
    ordering.MINKEY: -1,
    ordering.MAXKEY: 127,
}
_INT32_MAX = 2**31 - 1


def bson_type_number(value: Any) -> int:
    """The BSON type byte of a decoded value (what `$type` compares against)."""
    rank = ordering.type_rank(value)
    if rank != ordering.NUMBER:
        return _RANK_TYPE_NUMBERS[rank]
    if isinstance(value, float):
        return 1
    if isinstance(value, Decimal128 | Decimal):
        return 19
    if isinstance(value, Int64) or not -_INT32_MAX - 1 <= value <= _INT32_MAX:
        return 18
    return 16


# -- field paths -------------------------------------------------------------------------------


def resolve(node: Any, parts: list[str]) -> list[Any]:
    """Every value a dotted path reaches, fanning out over arrays; empty when the path is absent."""
    if not parts:
        return [node]
    head, rest = parts[0], parts[1:]
    if type(node) is dict or isinstance(node, Mapping):
        return resolve(node[head], rest) if head in node else []
    if isinstance(node, list):
        found: list[Any] = []
        if head.isdigit() and int(head) < len(node):
            found.extend(resolve(node[int(head)], rest))
        for element in node:
            if isinstance(element, Mapping):
                found.extend(resolve(element, parts))
        return found
    return []


def get_path(doc: Any, path: str) -> Any:
    """The value at a dotted path without array fan-out (numeric parts index arrays)."""
    node = doc
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return MISSING
    return node


def _candidates(values: list[Any]) -> Iterable[Any]:
    if not values:
        yield None
    for value in values:
        yield value
        if isinstance(value, list):
            yield from value


# -- filters -----------------------------------------------------------------------------------


def matches(doc: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    """Whether `doc` satisfies the MongoDB filter `query`."""
    for key, condition in query.items():
        if key == "$and":
            if not all(matches(doc, sub) for sub in _clauses(key, condition)):
                return False
        elif key == "$or":
            if not any(matches(doc, sub) for sub in _clauses(key, condition)):
                return False
        elif key == "$nor":
            if any(matches(doc, sub) for sub in _clauses(key, condition)):
                return False
        elif key == "$comment":
            continue
        elif key.startswith("$"):
            raise unsupported(f"top-level operator {key}")
        elif not field_matches(resolve(doc, key.split(".")), condition):
            return False
    return True


def filter_paths(query: Mapping[str, Any]) -> frozenset[str] | None:
    """The field paths a filter reads, or None when it reads more than named paths."""
    paths: set[str] = set()
    for key, condition in query.items():
        if key in ("$and", "$or", "$nor"):
            for sub in _clauses(key, condition):
                inner = filter_paths(sub)
                if inner is None:
                    return None
                paths |= inner
        elif key == "$comment":
            continue
        elif key.startswith("$"):
            return None
        else:
            paths.add(key)
    return frozenset(paths)


class MemoizedFilter:
    """A filter whose verdicts are remembered by the values at the paths it reads (typed, so
    that 1, 1.0 and True never share a verdict). Change-stream filters read the namespace and
    the operation type, which take few distinct values, so most events are matched by one
    dictionary lookup. Values that cannot be hashed (documents, arrays) are matched afresh."""

    MAX_VERDICTS = 4096

    def __init__(self, query: Mapping[str, Any]) -> None:
        self.query = query
        paths = filter_paths(query)
        self._paths = None if paths is None else sorted(path.split(".") for path in paths)
        self._verdicts: dict[tuple[Any, ...], bool] = {}

    def reads(self, field: str) -> bool:
        """Whether the filter may read ``field`` (a top-level field)."""
        return self._paths is None or any(parts[0] == field for parts in self._paths)

    def matches(self, doc: Mapping[str, Any]) -> bool:
        if self._paths is None:
            return matches(doc, self.query)
        paths = enumerate(self._paths)
        key = tuple([(path, type(v), v) for path, parts in paths for v in resolve(doc, parts)])
        try:
            return self._verdicts[key]
        except KeyError:
            verdict = matches(doc, self.query)
        except TypeError:
            return matches(doc, self.query)
        if len(self._verdicts) >= self.MAX_VERDICTS:
            self._verdicts.clear()
        self._verdicts[key] = verdict
        return verdict


def validate(query: Mapping[str, Any]) -> None:
    """Raise the error a bad filter causes, even when there is no document to match it on."""
    matches({}, query)


def _clauses(operator: str, condition: Any) -> list[Mapping[str, Any]]:
    if not isinstance(condition, list) or not condition:
        raise CommandError(ErrorCode.BAD_VALUE, f"{operator} argument must be a non-empty array")
    return condition


def is_operator_document(condition: Any) -> bool:
    """Whether a condition is `{$op: ...}` rather than a literal document to compare with."""
    return (
        isinstance(condition, Mapping) and bool(condition) and next(iter(condition)).startswith("$")
    )


def field_matches(values: list[Any], condition: Any) -> bool:
    """Whether the values found at one path satisfy a field condition."""
    if is_operator_document(condition):
        return all(_operator(op, arg, values, condition) for op, arg in condition.items())
    return _equals_any(values, condition)


def _equals_any(values: list[Any], target: Any) -> bool:
    if isinstance(target, Regex | re.Pattern):
        pattern = _compile(target)
        return any(
            (isinstance(c, str) and pattern.search(c) is not None)
            or (isinstance(c, Regex | re.Pattern) and ordering.compare(c, target) == 0)
            for c in _candidates(values)
        )
    if type(target) is str:  # the common case, equal only to the same string (not to Code)
        return any(type(c) is str and c == target for c in _candidates(values))
    key = ordering.sort_key(target)
    return any(ordering.sort_key(c) == key for c in _candidates(values))


def _compile(pattern: Regex | re.Pattern[str], options: str = "") -> re.Pattern[str]:
    if isinstance(pattern, re.Pattern):
        return pattern
    flags = 0
    letters = options or (pattern.flags if isinstance(pattern.flags, str) else "")
    flag_bits = pattern.flags if isinstance(pattern.flags, int) else 0
    for letter, flag in (("i", re.I), ("m", re.M), ("s", re.S), ("x", re.X)):
        if letter in letters:
            flags |= flag
    return re.compile(str(pattern.pattern), flags | flag_bits)


_NAN_KEY = ordering.sort_key(float("nan"))


def _in_range(op: str, bound: Any, values: list[Any]) -> bool:
    bound_key = ordering.sort_key(bound)
    spans_all = bound_key[0] in (ordering.MINKEY, ordering.MAXKEY)
    for candidate in _candidates(values):
        key = ordering.sort_key(candidate)
        if not spans_all and key[0] != bound_key[0]:
            continue
        if not spans_all and _NAN_KEY in (key, bound_key):
            # NaN sorts below all numbers but a range only matches it against a NaN bound.
            if key == bound_key and op in ("$gte", "$lte"):
                return True
            continue
        if (
            (op == "$gt" and key > bound_key)
            or (op == "$gte" and key >= bound_key)
            or (op == "$lt" and key < bound_key)
            or (op == "$lte" and key <= bound_key)
        ):
            return True
    return False


def _type_matches(values: list[Any], spec: Any) -> bool:
    wanted = spec if isinstance(spec, list) else [spec]
    numbers: set[int] = set()
    for item in wanted:
        if item == "number":
            numbers.update((1, 16, 18, 19))
        elif isinstance(item, str):
            if item not in _TYPE_NUMBERS:
                raise CommandError(ErrorCode.BAD_VALUE, f"Unknown type name alias: {item}")
            numbers.add(_TYPE_NUMBERS[item])
        else:
            numbers.add(int(item))
    # Unlike other operators, a missing field has no type: only found values count.
    found = [*values, *(e for v in values if isinstance(v, list) for e in v)]
    return any(bson_type_number(value) in numbers for value in found)


def _element_matches(element: Any, condition: Any) -> bool:
    if is_operator_document(condition) and next(iter(condition)) not in ("$and", "$or", "$nor"):
        return field_matches([element], condition)
    if isinstance(condition, Mapping):
        return isinstance(element, Mapping) and matches(element, condition)
    return _equals_any([element], condition)


def _operator(op: str, arg: Any, values: list[Any], siblings: Mapping[str, Any]) -> bool:
    if op == "$eq":
        return _equals_any(values, arg)
    if op == "$ne":
        return not _equals_any(values, arg)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return _in_range(op, arg, values)
    if op in ("$in", "$nin"):
        if not isinstance(arg, list):
            raise CommandError(ErrorCode.BAD_VALUE, f"{op} needs an array")
        found = any(_equals_any(values, target) for target in arg)
        return found if op == "$in" else not found
    if op == "$exists":
        return bool(values) == bool(arg)
    if op == "$not":
        if isinstance(arg, Regex | re.Pattern):
            return not _equals_any(values, arg)
        if not is_operator_document(arg):
            raise CommandError(ErrorCode.BAD_VALUE, "$not needs a regex or a document")
        return not field_matches(values, arg)
    if op == "$type":
        return _type_matches(values, arg)
    if op == "$regex":
        pattern = _compile(
            arg if isinstance(arg, Regex | re.Pattern) else Regex(arg),
            siblings.get("$options", ""),
        )
        return _equals_any(values, pattern)
    if op == "$options":
        return True
    if op == "$size":
        return any(isinstance(v, list) and len(v) == arg for v in values)
    if op == "$all":
        return bool(arg) and all(
            _element_matches_any(values, item["$elemMatch"])
            if isinstance(item, Mapping) and "$elemMatch" in item
            else _equals_any(values, item)
            for item in arg
        )
    if op == "$elemMatch":
        return _element_matches_any(values, arg)
    if op == "$mod":
        divisor, remainder = arg
        return any(
            ordering.type_rank(c) == ordering.NUMBER and int(c) % int(divisor) == int(remainder)
            for c in _candidates(values)
            if not isinstance(c, bool)
        )
    raise unsupported(f"query operator {op}")


def _element_matches_any(values: list[Any], condition: Any) -> bool:
    return any(
        isinstance(v, list) and any(_element_matches(e, condition) for e in v) for v in values
    )


def referenced_fields(query: Mapping[str, Any]) -> set[str]:
    """Top-level field names a filter reads (to skip decoding when only `_id` is needed)."""
    fields: set[str] = set()
    for key, condition in query.items():
        if key in ("$and", "$or", "$nor") and isinstance(condition, list):
            for sub in condition:
                fields |= referenced_fields(sub)
        elif key != "$comment":
            fields.add(key.split(".", 1)[0])
    return fields


# -- expressions (the small subset aggregation stages use) -------------------------------------


def evaluate(doc: Mapping[str, Any], expression: Any) -> Any:
    """Evaluate `"$field.path"` references, `{$literal}` and nested documents/arrays."""
    if isinstance(expression, str) and expression.startswith("$"):
        if expression in ("$$ROOT", "$$CURRENT"):
            return doc
        if expression == "$$REMOVE":
            return MISSING  # manual, "Variables in Aggregation Expressions": evaluates to missing
        for variable in ("$$ROOT.", "$$CURRENT."):
            if expression.startswith(variable):
                return evaluate(doc, "$" + expression[len(variable) :])
        if expression.startswith("$$"):
            # $$NOW, $$CLUSTER_TIME, user variables...: never read as a field named "$NOW".
            raise unsupported(f"aggregation variable {expression.split('.', 1)[0]}")
        values = resolve(doc, expression[1:].split("."))
        if not values:
            return MISSING
        return values[0] if len(values) == 1 and "." not in expression else _flatten(values)
    if isinstance(expression, Mapping):
        if len(expression) == 1 and "$literal" in expression:
            return expression["$literal"]
        if is_operator_document(expression):
            raise unsupported(f"expression operator {next(iter(expression))}")
        return {
            k: v
            for k, v in ((k, evaluate(doc, e)) for k, e in expression.items())
            if v is not MISSING
        }
    if isinstance(expression, list):
        return [evaluate(doc, e) for e in expression]
    return expression


def _flatten(values: list[Any]) -> Any:
    # "$a.b" over an array of sub-documents yields the array of their b values.
    return values[0] if len(values) == 1 else values


# -- projection --------------------------------------------------------------------------------


def project(doc: Mapping[str, Any], projection: Mapping[str, Any]) -> Document:
    """Apply an inclusion, exclusion or computed-field projection."""
    include_id = True
    inclusions: dict[str, Any] = {}
    exclusions: dict[str, Any] = {}
    computed: dict[str, Any] = {}
    for path, spec in projection.items():
        if path == "_id" and (isinstance(spec, bool) or spec in (0, 1)):
            include_id = bool(spec)
        elif isinstance(spec, bool) or (
            isinstance(spec, int | float) and not isinstance(spec, bool)
        ):
            (inclusions if spec else exclusions)[path] = True
        else:
            computed[path] = spec
    if exclusions and (inclusions or computed):
        raise CommandError(
            ErrorCode.EXCLUSION_IN_INCLUSION_PROJECTION,
            "Cannot do exclusion on field in inclusion projection",
        )
    if exclusions or not (inclusions or computed):
        result = _exclude(doc, _path_tree(exclusions))
        if not include_id:
            result.pop("_id", None)
        return result
    result = _include(doc, _path_tree(inclusions))
    if include_id and "_id" in doc:
        result = {"_id": doc["_id"], **result}
    for path, expression in computed.items():
        value = evaluate(doc, expression)
        if value is not MISSING:
            set_path(result, path, value)
    return result


def _path_tree(paths: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        parts = path.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if child is True:
                break
            node = child
        else:
            node[parts[-1]] = True
    return tree


def _include(node: Mapping[str, Any], tree: Mapping[str, Any]) -> Document:
    out: Document = {}
    for key, value in node.items():
        if key == "_id" or key not in tree:
            continue
        sub = tree[key]
        if sub is True:
            out[key] = value
        elif isinstance(value, Mapping):
            out[key] = _include(value, sub)
        elif isinstance(value, list):
            out[key] = [_include(e, sub) for e in value if isinstance(e, Mapping)]
    return out


def _exclude(node: Mapping[str, Any], tree: Mapping[str, Any]) -> Document:
    out: Document = {}
    for key, value in node.items():
        sub = tree.get(key)
        if sub is True:
            continue
        if sub is None:
            out[key] = value
        elif isinstance(value, Mapping):
            out[key] = _exclude(value, sub)
        elif isinstance(value, list):
            out[key] = [_exclude(e, sub) if isinstance(e, Mapping) else e for e in value]
        else:
            out[key] = value
    return out


# -- updates -----------------------------------------------------------------------------------


def _path_error(path: str, node: Any) -> CommandError:
    return CommandError(
        ErrorCode.PATH_NOT_VIABLE,
        f"Cannot create field '{path}' in element {{{type(node).__name__} value}}",
    )


def set_path(doc: Document, path: str, value: Any) -> None:
    """Set a dotted path, creating sub-documents and padding arrays with null as MongoDB does."""
    parts = path.split(".")
    node: Any = doc
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if part not in node:
                    node[part] = {}
                node = node[part]
        elif isinstance(node, list) and part.isdigit():
            position = int(part)
            node.extend([None] * (position + 1 - len(node)))
            if last:
                node[position] = value
            else:
                if node[position] is None:
                    node[position] = {}
                node = node[position]
        else:
            raise _path_error(path, node)


def unset_path(doc: Document, path: str) -> None:
    """Remove a dotted path (array elements become null, as in MongoDB)."""
    parent_path, _, leaf = path.rpartition(".")
    parent = get_path(doc, parent_path) if parent_path else doc
    if isinstance(parent, dict):
        parent.pop(leaf, None)
    elif isinstance(parent, list) and leaf.isdigit() and int(leaf) < len(parent):
        parent[int(leaf)] = None


def _arithmetic(op: str, current: Any, operand: Any, path: str) -> Any:
    for value in (current, operand):
        if isinstance(value, bool) or ordering.type_rank(value) != ordering.NUMBER:
            raise CommandError(
                ErrorCode.TYPE_MISMATCH,
                f"Cannot apply {op} to a value of non-numeric type at '{path}'",
            )
    if isinstance(current, Decimal128) or isinstance(operand, Decimal128):
        a = current.to_decimal() if isinstance(current, Decimal128) else Decimal(str(current))
        b = operand.to_decimal() if isinstance(operand, Decimal128) else Decimal(str(operand))
        return Decimal128(a + b if op == "$inc" else a * b)
    result = current + operand if op == "$inc" else current * operand
    if isinstance(result, int) and (isinstance(current, Int64) or isinstance(operand, Int64)):
        return Int64(result)
    return result


def _each(op: str, arg: Any) -> tuple[list[Any], Mapping[str, Any]]:
    if isinstance(arg, Mapping) and "$each" in arg:
        if not isinstance(arg["$each"], list):
            raise CommandError(
                ErrorCode.BAD_VALUE, f"The argument to $each in {op} must be an array"
            )
        return list(arg["$each"]), arg
    return [arg], {}


def _array_at(doc: Document, path: str, op: str) -> list[Any] | None:
    current = get_path(doc, path)
    if current is MISSING:
        return None
    if not isinstance(current, list):
        raise CommandError(
            ErrorCode.BAD_VALUE,
            f"The field '{path}' must be an array but is of type {type(current).__name__}",
        )
    return current


def _push(doc: Document, path: str, arg: Any) -> None:
    items, modifiers = _each("$push", arg)
    current = _array_at(doc, path, "$push")
    array = [] if current is None else list(current)
    position = modifiers.get("$position")
    if position is None:
        array.extend(items)
    else:
        array[position:position] = items
    if "$sort" in modifiers:
        spec = modifiers["$sort"]
        if isinstance(spec, Mapping):
            array = sort_documents(array, spec)
        else:
            array.sort(key=ordering.sort_key, reverse=spec < 0)
    if "$slice" in modifiers:
        limit = modifiers["$slice"]
        array = array[:limit] if limit >= 0 else array[limit:]
    set_path(doc, path, array)


def _add_to_set(doc: Document, path: str, arg: Any) -> None:
    items, _ = _each("$addToSet", arg)
    current = _array_at(doc, path, "$addToSet")
    array = [] if current is None else list(current)
    keys = {ordering.sort_key(v) for v in array}
    for item in items:
        key = ordering.sort_key(item)
        if key not in keys:
            keys.add(key)
            array.append(item)
    set_path(doc, path, array)


def _pull(doc: Document, path: str, arg: Any, *, pull_all: bool) -> None:
    current = _array_at(doc, path, "$pull")
    if current is None:
        return
    if pull_all:
        keys = {ordering.sort_key(v) for v in arg}
        kept = [v for v in current if ordering.sort_key(v) not in keys]
    else:
        kept = [v for v in current if not _element_matches(v, arg)]
    set_path(doc, path, kept)


def _check_conflicts(paths: list[str]) -> None:
    seen: list[str] = []
    for path in paths:
        for other in seen:
            if path == other or path.startswith(other + ".") or other.startswith(path + "."):
                raise CommandError(
                    ErrorCode.CONFLICTING_UPDATE_OPERATORS,
                    f"Updating the path '{path}' would create a conflict at '{other}'",
                )
        seen.append(path)


def apply_update(
    doc: Document, update: Mapping[str, Any], *, inserting: bool, now: datetime.datetime
) -> Document:
    """Apply update operators to a document in place and return it."""
    paths = [
        p for op, fields in update.items() if op != "$setOnInsert" or inserting for p in fields
    ]
    paths += [str(v) for op, fields in update.items() if op == "$rename" for v in fields.values()]
    _check_conflicts(paths)
    for op, fields in update.items():
        if not isinstance(fields, Mapping):
            raise CommandError(
                ErrorCode.FAILED_TO_PARSE,
                f"Modifiers operate on fields but we found {op} with a value",
            )
        for path, arg in fields.items():
            _apply_one(doc, op, path, arg, inserting=inserting, now=now)
    return doc


def _apply_one(
    doc: Document, op: str, path: str, arg: Any, *, inserting: bool, now: datetime.datetime
) -> None:
    if op == "$set" or (op == "$setOnInsert" and inserting):
        set_path(doc, path, arg)
    elif op == "$setOnInsert":
        return
    elif op == "$unset":
        unset_path(doc, path)
    elif op in ("$inc", "$mul"):
        current = get_path(doc, path)
        if current is MISSING:
            set_path(doc, path, arg if op == "$inc" else type(arg)(0))
        else:
            set_path(doc, path, _arithmetic(op, current, arg, path))
    elif op in ("$min", "$max"):
        current = get_path(doc, path)
        order = ordering.compare(arg, current) if current is not MISSING else 0
        if current is MISSING or (order < 0 if op == "$min" else order > 0):
            set_path(doc, path, arg)
    elif op == "$push":
        _push(doc, path, arg)
    elif op == "$addToSet":
        _add_to_set(doc, path, arg)
    elif op in ("$pull", "$pullAll"):
        _pull(doc, path, arg, pull_all=op == "$pullAll")
    elif op == "$pop":
        array = _array_at(doc, path, "$pop")
        if array:
            set_path(doc, path, array[:-1] if arg > 0 else array[1:])
    elif op == "$rename":
        value = get_path(doc, path)
        if value is not MISSING:
            unset_path(doc, path)
            set_path(doc, str(arg), value)
    elif op == "$currentDate":
        wants_timestamp = isinstance(arg, Mapping) and arg.get("$type") == "timestamp"
        stamp = Timestamp(int(now.timestamp()), 1) if wants_timestamp else now
        set_path(doc, path, stamp)
    else:
        raise CommandError(
            ErrorCode.FAILED_TO_PARSE, f"Unknown modifier: {op}. Expected a valid update modifier"
        )


def is_update_document(update: Any) -> bool:
    """Operator updates start with `$`; anything else is a replacement document."""
    if isinstance(update, list):
        raise unsupported("update with an aggregation pipeline")
    return is_operator_document(update)


def upsert_seed(query: Mapping[str, Any]) -> Document:
    """The fields an upsert copies from its filter: top-level equality conditions."""
    seed: Document = {}
    for key, condition in query.items():
        if key == "$and" and isinstance(condition, list):
            for sub in condition:
                seed.update(upsert_seed(sub))
        elif key.startswith("$"):
            continue
        elif is_operator_document(condition):
            if "$eq" in condition:
                set_path(seed, key, condition["$eq"])
        elif not isinstance(condition, Regex | re.Pattern):
            set_path(seed, key, condition)
    return seed


# -- sorting -----------------------------------------------------------------------------------


def _sort_value(doc: Mapping[str, Any], path: str, descending: bool) -> ordering.SortKey:
    values = resolve(doc, path.split("."))
    keys: list[ordering.SortKey] = []
    for value in values:
        if isinstance(value, list):
            # Arrays sort by their smallest element ascending, largest descending; [] below null.
            keys.extend(ordering.sort_key(v) for v in value)
            if not value:
                keys.append((ordering.MINKEY + 0.5,))
        else:
            keys.append(ordering.sort_key(value))
    if not keys:
        return ordering.sort_key(None)
    return max(keys) if descending else min(keys)


def sort_documents(
    docs: list[Any],
    spec: Mapping[str, Any],
    as_document: Callable[[Any], Mapping[str, Any]] = lambda d: d,
) -> list[Any]:
    """Stable multi-key sort in MongoDB order; `as_document` maps an item to the dict to read."""
    result = list(docs)
    # Sorting by the least significant key first relies on the sort being stable.
    for path, direction in reversed(list(spec.items())):
        if isinstance(direction, Mapping):
            raise unsupported("sort by $meta")
        descending = direction < 0

        def key(item: Any, path: str = path, descending: bool = descending) -> ordering.SortKey:
            return _sort_value(as_document(item), path, descending)

        result.sort(key=key, reverse=descending)
    return result
