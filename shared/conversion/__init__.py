"""Lossless, fast BSON → Arrow conversion for the landing zone (see the README section)."""

from shared.landing_zone.parquet_files import RowMarker

from .converter import BatchConverter, json_texts, key_only, split_documents
from .id_text import id_text, parse_id_text
from .names import KEY_COLUMN, OVERFLOW_COLUMN, ROW_MARKER, TWIN_SUFFIX
from .recover import recover_document
from .schema import FieldSpec, TableSchema

__all__ = [
    "KEY_COLUMN",
    "OVERFLOW_COLUMN",
    "ROW_MARKER",
    "TWIN_SUFFIX",
    "BatchConverter",
    "FieldSpec",
    "RowMarker",
    "TableSchema",
    "id_text",
    "json_texts",
    "key_only",
    "parse_id_text",
    "recover_document",
    "split_documents",
]
