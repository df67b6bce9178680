"""The delta an update writes to the oplog, and the `updateDescription` a change stream makes of it.

A real server (4.7+) logs an update as a `$v: 2` delta oplog entry, a tree of sub-diffs with
arrays described element by element, and the change stream turns that tree into
`updateDescription` (change_stream_document_diff_parser.cpp). The tree comes from one of two
places, and they differ, so the sandbox models both:

- an update with operators (`$set`, `$push`, ...) logs what each modifier did, at the path it
  names (v2_log_builder.cpp, modifier_node.cpp): a `$set` of a whole array or sub-document is
  logged whole, a modifier that only appends to an array (`$push` onto a non-empty array without
  `$position`/`$sort`/`$slice`, `$addToSet`) logs each appended element as `array.N`, a created
  path is logged at its first new component, and a modifier that changed nothing logs nothing;
- an update written as an aggregation pipeline is logged as the diff of the two documents
  (document_diff_calculator.cpp `computeOplogDiff`): arrays compared index by index, an element
  changed or appended reported as `array.N`, a shorter array as a resize (`truncatedArrays`), and
  any sub-diff not smaller than the value it describes replaced by the whole value; when the diff
  of the whole document is not smaller than the new document the server logs a replacement
  (pipeline_executor.cpp), which a change stream reports as a `replace` event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import bson

from mongodb_sandbox import storage

Part = str | int  # a field name, or an index into an array

# update_oplog_entry_serialization.h: room kept for the entry's `$v` and `diff` fields when the
# size of a pipeline update's diff is weighed against the new document.
DELTA_METADATA_BYTES = 15


@dataclass
class DocDiff:
    """A sub-document's changes: the sections of a `$v: 2` document diff."""

    deletes: list[str] = field(default_factory=list)
    updates: dict[str, Any] = field(default_factory=dict)
    inserts: dict[str, Any] = field(default_factory=dict)
    children: dict[str, DocDiff | ArrayDiff] = field(default_factory=dict)


@dataclass
class ArrayDiff:
    """An array's changes: new values or sub-diffs by index, and a resize if it got shorter."""

    items: dict[int, Any] = field(default_factory=dict)
    new_size: int | None = None


# -- sizes and equality ------------------------------------------------------------------------


def _element_bytes(value: Any) -> bytes:
    return bson.encode({"": value}, codec_options=storage.DECODE_OPTIONS)


def _same(before: Any, after: Any) -> bool:
    """BSONElement::binaryEqualValues: same type and same bytes (1 and 1.0 differ)."""
    return _element_bytes(before) == _element_bytes(after)


def _value_size(value: Any) -> int:
    # An embedded document's objsize(): a one-field document less its framing and field name.
    return len(bson.encode({"": value}, codec_options=storage.DECODE_OPTIONS)) - 7


def _serialize(diff: DocDiff | ArrayDiff) -> dict[str, Any]:
    """The diff in the `$v: 2` oplog format (document_diff_serialization.h), to weigh it."""
    out: dict[str, Any] = {}
    if isinstance(diff, ArrayDiff):
        out["a"] = True
        if diff.new_size is not None:
            out["l"] = diff.new_size
        for index, item in diff.items.items():
            if isinstance(item, DocDiff | ArrayDiff):
                out[f"s{index}"] = _serialize(item)
            else:
                out[f"u{index}"] = item
        return out
    if diff.deletes:
        out["d"] = dict.fromkeys(diff.deletes, False)
    if diff.updates:
        out["u"] = dict(diff.updates)
    if diff.inserts:
        out["i"] = dict(diff.inserts)
    for name, child in diff.children.items():
        out[f"s{name}"] = _serialize(child)
    return out


def _diff_size(diff: DocDiff | ArrayDiff) -> int:
    return len(bson.encode(_serialize(diff), codec_options=storage.DECODE_OPTIONS))


# -- pipeline updates: the diff of two documents -----------------------------------------------


def compute_diff(pre: Mapping[str, Any], post: Mapping[str, Any]) -> DocDiff | None:
    """document_diff_calculator.cpp `computeOplogDiff`: the delta from `pre` to `post`, or None
    when it would not be smaller than `post` (the server then logs a replacement)."""
    diff = _doc_diff(pre, post, limited=True)
    post_size = _value_size(dict(post))
    if diff is None or _diff_size(diff) + DELTA_METADATA_BYTES >= post_size:
        return None
    return diff


def full_diff(pre: Mapping[str, Any], post: Mapping[str, Any]) -> DocDiff:
    """The same delta with no size limit (`computeOplogDiff_forTest`): never falls back."""
    diff = _doc_diff(pre, post, limited=False)
    assert diff is not None
    return diff


def _sub_diff(before: Any, after: Any, limited: bool) -> DocDiff | ArrayDiff | None:
    if isinstance(before, Mapping):
        return _doc_diff(before, after, limited)
    return _array_diff(before, after, limited)


def _both_nested(before: Any, after: Any) -> bool:
    return (isinstance(before, Mapping) and isinstance(after, Mapping)) or (
        isinstance(before, list) and isinstance(after, list)
    )


def _doc_diff(pre: Mapping[str, Any], post: Mapping[str, Any], limited: bool) -> DocDiff | None:
    """computeDocDiff: walk both documents in field order; a field met out of place is deleted
    here and inserted again at the end (so a reordered field shows as updated)."""
    diff = DocDiff()
    before, after = list(pre.items()), list(post.items())
    i = j = 0
    deferred: set[str] = set()
    while i < len(before) and j < len(after):
        (name, old), (new_name, new) = before[i], after[j]
        if name == new_name:
            if not _same(old, new):
                if _both_nested(old, new):
                    sub = _sub_diff(old, new, limited)
                    if sub is None:
                        diff.updates[name] = new
                    else:
                        diff.children[name] = sub
                else:
                    diff.updates[name] = new
            i += 1
            j += 1
        else:
            # Absent from `post`, or present later on (then inserted below and not deleted).
            deferred.add(name)
            i += 1
    diff.deletes.extend(name for name, _ in before[i:])
    for name, value in after[j:]:
        diff.inserts[name] = value
        deferred.discard(name)
    diff.deletes.extend(sorted(deferred, key=lambda name: name.encode()))
    return diff if not limited or _diff_size(diff) < _value_size(dict(post)) else None


def _array_diff(pre: list[Any], post: list[Any], limited: bool) -> ArrayDiff | None:
    """computeArrayDiff: compare index by index; appended elements are updates at their index,
    and a shorter array is a resize to the new length."""
    diff = ArrayDiff()
    for index, (old, new) in enumerate(zip(pre, post, strict=False)):
        if _same(old, new):
            continue
        sub = _sub_diff(old, new, limited) if _both_nested(old, new) else None
        diff.items[index] = new if sub is None else sub
    for index in range(len(pre), len(post)):
        diff.items[index] = post[index]
    if len(pre) > len(post):
        diff.new_size = len(post)
    return diff if not limited or _diff_size(diff) < _value_size(post) else None


# -- operator updates: what each modifier logged -----------------------------------------------

_REMOVING = frozenset({"$unset", "$pull", "$pullAll", "$pop"})


def modifier_diff(
    pre: Mapping[str, Any], post: Mapping[str, Any], update: Mapping[str, Any]
) -> DocDiff:
    """The delta the server's v2 log builder writes for an update with operators that turned
    `pre` into `post` (the update already applied; paths do not conflict)."""
    logged: list[tuple[str, list[Part], Any]] = []
    for op, fields in update.items():
        if op == "$setOnInsert":
            continue  # applies only when inserting, and an upsert's insert has no delta
        for path, arg in fields.items():
            if op == "$rename":
                # rename_node.cpp: an unset of the source and a set of the destination.
                logged += _logged(pre, post, path, "$unset", None)
                logged += _logged(pre, post, str(arg), "$set", None)
            else:
                logged += _logged(pre, post, path, op, arg)
    root = DocDiff()
    seen: set[tuple[Part, ...]] = set()
    # UpdateObjectNode applies (and so logs) its children in field-name order.
    for kind, parts, value in sorted(logged, key=lambda entry: [_order(p) for p in entry[1]]):
        if tuple(parts) in seen:
            continue  # two modifiers creating under one new field: it is logged once, whole
        seen.add(tuple(parts))
        _add(root, parts, kind, value)
    return root


def _order(part: Part) -> str:
    # pathsupport::cmpPathsAndArrayIndexes: array indexes compare as numbers.
    return str(part).zfill(20) if isinstance(part, int) or part.isdigit() else part


def _logged(
    pre: Mapping[str, Any], post: Mapping[str, Any], path: str, op: str, arg: Any
) -> list[tuple[str, list[Part], Any]]:
    """What one modifier logs: (kind, path with array indexes as ints, value)."""
    parts: list[Part] = []
    node: Any = pre
    for name in path.split("."):
        if isinstance(node, Mapping):
            parts.append(name)
            if name in node:
                node = node[name]
                continue
        elif isinstance(node, list) and name.isdigit():
            parts.append(int(name))
            if int(name) < len(node):
                node = node[int(name)]
                continue
        else:
            return []  # not a viable path: the update failed before anything was logged
        # Created from here on (modifier_node.cpp applyToNonexistentElement): logged once, at
        # its first new component, with everything made under it. Removals of nothing are no-ops.
        if op in _REMOVING:
            return []
        created = _value_at(post, parts)
        return [] if created is _ABSENT else [("insert", parts, created)]
    after = _value_at(post, parts)
    if op == "$unset":
        # unset_node.cpp: an array element becomes null (an update), a field is deleted.
        return (
            [("update", parts, None)] if isinstance(parts[-1], int) else [("delete", parts, None)]
        )
    if after is _ABSENT or _same(node, after):
        return []  # ModifyResult::kNoOp
    if isinstance(node, list) and isinstance(after, list) and _appends(op, arg, node, after):
        # ModifyResult::kArrayAppendUpdate: each appended element logged as created at its index.
        return [("insert", [*parts, index], after[index]) for index in range(len(node), len(after))]
    return [("update", parts, after)]


def _appends(op: str, arg: Any, before: list[Any], after: list[Any]) -> bool:
    if len(after) <= len(before) or not all(
        _same(a, b) for a, b in zip(before, after, strict=False)
    ):
        return False
    if op == "$addToSet":
        return True  # addtoset_node.cpp: new elements only ever go to the end
    if op != "$push" or not before:
        return False  # push_node.cpp: a push onto an empty array is a normal update
    if isinstance(arg, Mapping) and "$each" in arg:
        if "$sort" in arg or "$slice" in arg:
            return False
        position = arg.get("$position")
        return position is None or position > len(before)
    return True


class _Absent:
    pass


_ABSENT: Any = _Absent()


def _value_at(doc: Any, parts: list[Part]) -> Any:
    node = doc
    for part in parts:
        if isinstance(part, int) and isinstance(node, list) and part < len(node):
            node = node[part]
        elif isinstance(part, str) and isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return _ABSENT
    return node


def _add(root: DocDiff, parts: list[Part], kind: str, value: Any) -> None:
    """v2_log_builder.cpp addNodeAtPath: an array node where the next part is an index."""
    node: DocDiff | ArrayDiff = root
    for position, part in enumerate(parts[:-1]):
        following = parts[position + 1]
        if isinstance(node, ArrayDiff):
            assert isinstance(part, int)
            child = node.items.get(part)
            if not isinstance(child, DocDiff | ArrayDiff):
                child = ArrayDiff() if isinstance(following, int) else DocDiff()
                node.items[part] = child
        else:
            assert isinstance(part, str)
            child = node.children.get(part)
            if child is None:
                child = ArrayDiff() if isinstance(following, int) else DocDiff()
                node.children[part] = child
        node = child
    last = parts[-1]
    if isinstance(node, ArrayDiff):
        assert isinstance(last, int)
        node.items[last] = value
    elif kind == "delete":
        node.deletes.append(str(last))
    elif kind == "update":
        node.updates[str(last)] = value
    else:
        node.inserts[str(last)] = value


# -- the change event's updateDescription ------------------------------------------------------


def describe(diff: DocDiff) -> dict[str, Any]:
    """change_stream_document_diff_parser.cpp: `updateDescription` from a delta, with its
    `disambiguatedPaths` (a change stream shows these only with showExpandedEvents)."""
    updated: dict[str, Any] = {}
    removed: list[str] = []
    truncated: list[dict[str, Any]] = []
    ambiguous: dict[str, list[Part]] = {}

    def note(path: list[Part]) -> str:
        dotted = ".".join(str(p) for p in path)
        if is_ambiguous(path):
            ambiguous[dotted] = list(path)
        return dotted

    def walk(node: DocDiff | ArrayDiff, path: list[Part]) -> None:
        if isinstance(node, ArrayDiff):
            if node.new_size is not None:
                truncated.append({"field": note(path), "newSize": node.new_size})
            for index in sorted(node.items):
                item = node.items[index]
                if isinstance(item, DocDiff | ArrayDiff):
                    walk(item, [*path, index])
                else:
                    updated[note([*path, index])] = item
            return
        for name, value in [*node.updates.items(), *node.inserts.items()]:
            updated[note([*path, name])] = value
        removed.extend(note([*path, name]) for name in node.deletes)
        for name, child in node.children.items():
            walk(child, [*path, name])

    walk(diff, [])
    return {
        "updatedFields": updated,
        "removedFields": removed,
        "truncatedArrays": truncated,
        "disambiguatedPaths": ambiguous,
    }


def is_ambiguous(path: list[Part]) -> bool:
    """Whether a changed path needs spelling out part by part (the parser's
    `_appendFieldToPath`): a field name, not first in the path, that is a number in canonical
    form (FieldRef::isNumericPathComponentStrict), or any field name holding a dot. An array
    index alone is not ambiguous; in an ambiguous path it is given as an int."""
    for position, part in enumerate(path):
        if isinstance(part, int):
            continue
        numeric = part.isdigit() and part.isascii() and (part == "0" or not part.startswith("0"))
        if (numeric and position > 0) or (not numeric and "." in part):
            return True
    return False
