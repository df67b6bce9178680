"""Relaxed Extended JSON rendered by libbson (C), many values per call.

PyMongo's ``json_util`` is pure Python and costs tens of microseconds per nested document;
pymongoarrow ships libbson, whose ``bson_as_relaxed_extended_json`` renders a whole batch in
one C call. Values are wrapped as the elements of one BSON document separated by a string
element holding a random per-call nonce: quotes inside rendered strings are always escaped,
so ``"s" : "<nonce>"`` can only appear as our separator and a plain ``str.split`` recovers
every value's JSON text exactly.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

# The bundled library is named by platform and libbson major: libbson2.so.2 on Linux,
# libbson2.2.dylib on macOS, libbson-1.0.so.0 in libbson 1 builds.
_LIB_NAME = re.compile(r"(lib)?bson[-\d.]*\.(so[\d.]*|dylib|dll)")


def _lib_path() -> Path:
    # Locate the package without importing it: importing pymongoarrow loads its Cython module,
    # which warns about pyarrow struct sizes; we only need the bundled shared library.
    spec = importlib.util.find_spec("pymongoarrow")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("pymongoarrow (which bundles libbson) is not installed")
    folder = Path(next(iter(spec.submodule_search_locations)))
    for path in sorted(folder.iterdir()):
        if _LIB_NAME.fullmatch(path.name):
            return path
    raise ImportError(f"no libbson shared library in {folder}")


def _load() -> ctypes.CDLL:
    lib = ctypes.CDLL(os.fspath(_lib_path()))
    # bson_new_from_data allocates the bson_t (and copies the bytes), so sizeof(bson_t), which
    # is libbson's private ABI, never matters here.
    lib.bson_new_from_data.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.bson_new_from_data.restype = ctypes.c_void_p
    lib.bson_destroy.argtypes = [ctypes.c_void_p]
    lib.bson_destroy.restype = None
    lib.bson_as_relaxed_extended_json.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_size_t),
    ]
    lib.bson_as_relaxed_extended_json.restype = ctypes.c_void_p
    lib.bson_free.argtypes = [ctypes.c_void_p]
    lib.bson_free.restype = None
    return lib


_LIB = _load()
_VALUE_KEY_LEN = len('"v" : ')


def element(type_byte: bytes, value_bytes: bytes) -> bytes:
    """One BSON element named ``v``: what :func:`to_json_texts` takes."""
    return type_byte + b"v\x00" + value_bytes


def render_document(body: bytes) -> str:
    """Relaxed Extended JSON of the document whose elements are ``body``."""
    return _render(body).decode("utf-8")


def _render(body: bytes) -> bytes:
    doc = (len(body) + 5).to_bytes(4, "little") + body + b"\x00"
    bson = _LIB.bson_new_from_data(doc, len(doc))
    if not bson:
        raise ValueError("invalid BSON handed to libbson")
    try:
        length = ctypes.c_size_t()
        ptr = _LIB.bson_as_relaxed_extended_json(bson, ctypes.byref(length))
    finally:
        _LIB.bson_destroy(bson)
    if not ptr:
        # libbson refuses invalid UTF-8; MongoDB validates UTF-8 on write, so this means
        # corrupt input that must not be published half-converted.
        raise ValueError("libbson could not render the values as Extended JSON")
    try:
        return ctypes.string_at(ptr, length.value)
    finally:
        _LIB.bson_free(ptr)


def _separator() -> tuple[bytes, str]:
    nonce = secrets.token_hex(16)
    sep = b"\x02s\x00" + (len(nonce) + 1).to_bytes(4, "little") + nonce.encode() + b"\x00"
    return sep, f', "s" : "{nonce}", '


def to_json_array(elements: Sequence[bytes], header: bytes = b"") -> pa.Array:
    """:func:`to_json_texts` as an Arrow string array, split in Arrow (no Python strings)."""
    if not elements:
        return pa.array([], pa.string())
    sep, sep_text = _separator()
    text = _render(header + (sep + header).join(elements))
    # text is b'{ "v" : J0, "s" : "N", "v" : J1, ... }'
    pattern = (sep_text + '"v" : ').encode()
    whole = pa.array([text[2 + _VALUE_KEY_LEN : -2]], pa.binary())
    parts = pc.list_flatten(pc.split_pattern(whole, pattern))
    if len(parts) != len(elements):
        raise ValueError("Extended JSON split mismatch")
    return parts.cast(pa.string())


def to_json_texts(elements: Sequence[bytes], header: bytes = b"") -> list[str]:
    """Relaxed Extended JSON text of each element's value, in order.

    ``header`` (type byte and ``v`` key) is put before every element when the elements are
    bare values of one type.
    """
    if not elements:
        return []
    sep, sep_text = _separator()
    text = render_document(header + (sep + header).join(elements))
    # text is '{ "v" : J0, "s" : "N", "v" : J1, ... }'
    parts = text[2:-2].split(sep_text)
    if len(parts) != len(elements):
        raise ValueError("Extended JSON split mismatch")
    return [p[_VALUE_KEY_LEN:] for p in parts]
