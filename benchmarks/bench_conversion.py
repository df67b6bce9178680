"""Throughput of BSON → parquet (ZSTD): our converter vs the partner app's pandas approach.

Run: .venv/bin/python benchmarks/bench_conversion.py [--docs N] [--batch B]
The last line is ``ratio_vs_baseline: <x>``. Both run in this process, one core.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

import bson
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from bson import Decimal128, Int64, ObjectId
from pandas.api.types import is_datetime64_any_dtype, is_object_dtype

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shared.conversion import BatchConverter


def orders(n: int, seed: int = 7) -> list[bytes]:
    """Realistic e-commerce orders as raw BSON documents."""
    rnd = random.Random(seed)
    base = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    out = []
    for i in range(n):
        items = [
            {
                "sku": f"SKU-{rnd.randrange(10_000):05d}",
                "qty": rnd.randrange(1, 6),
                "price": Decimal128(f"{rnd.randrange(100, 50_000) / 100:.2f}"),
            }
            for _ in range(3)
        ]
        doc = {
            "_id": ObjectId(),
            "orderNo": Int64(10_000_000 + i),
            "customer": f"customer-{rnd.randrange(100_000)}",
            "email": f"user{rnd.randrange(1_000_000)}@example.com",
            "status": rnd.choice(["new", "paid", "shipped", "delivered", "cancelled"]),
            "itemCount": 3,
            "weightKg": round(rnd.uniform(0.1, 30), 3),
            "discount": rnd.random() / 4,
            "createdAt": base + datetime.timedelta(seconds=rnd.randrange(30_000_000)),
            "total": Decimal128(f"{rnd.randrange(1_000, 500_000) / 100:.2f}"),
            "address": {
                "street": f"{rnd.randrange(1, 999)} Main Street",
                "city": rnd.choice(["Springfield", "Shelbyville", "Ogdenville"]),
                "zip": f"{rnd.randrange(10_000, 99_999)}",
                "country": "US",
            },
            "items": items,
        }
        out.append(bson.encode(doc))
    return out


def ours(raws: list[bytes], batch: int) -> int:
    conv = BatchConverter()
    size = 0
    for start in range(0, len(raws), batch):
        table = conv.convert(b"".join(raws[start : start + batch]))
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        size += sink.tell()
    return size


# --- Baseline: the partner app's initial-sync transform, step for step -----------------------
# Modelled on mongodb-partners/MongoDB_Fabric_Mirroring v1.4.x (our own re-implementation of the
# same steps, not a copy):
# - init_sync.py `init_sync`: per batch `pd.DataFrame(list(cursor))` (PyMongo-decoded dicts), then
#   `schema_utils.process_dataframe`, then `schema_utils.finalize_dataframe_for_parquet`, then
#   `DataFrame.to_parquet(path, index=False)` (pandas/pyarrow default codec, snappy). The fixed
#   `time.sleep(30)` per file and the OneLake upload are left out: CPU work only.
# - schema_utils.py `init_table_schema`/`_build_schema_from_documents` (once, from a sample of
#   SCHEMA_BOOTSTRAP_MAX_FRACTION = 4.9 % of the collection), `init_column_schema`,
#   `process_dataframe` (convert_dtypes(dtype_backend="pyarrow") copied back column by column; per
#   column: first valid item, schema lookup, a per-value `_needs_type_conversion` scan and, if any
#   value mismatches, a per-row conversion through `_apply_column_conversion` /
#   `TYPE_TO_CONVERT_FUNCTION_MAP` (each conversion logs a debug f-string); Int64 fix-up;
#   datetime → datetime64[ms]; `_cast_column_to_schema_dtype`), `finalize_dataframe_for_parquet`
#   (casts every non-_id column again) and `CustomJSONEncoder` (json.dumps(default=str) for
#   dicts/lists).
# - constants.py: TYPES_TO_CONVERT_TO_STR = [ObjectId, dict, list].

_log = logging.getLogger("partner_app_baseline")
_TO_STR = (ObjectId, dict, list)
_DTYPE_FIXES = {"datetime64[ns]": "datetime64[ms]", "bool": "boolean", "int64": "Int64"}
_I64 = (-(2**63), 2**63 - 1)


def _is_null(item: Any) -> bool:
    if item is None:
        return True
    if isinstance(item, list | dict | tuple | np.ndarray | pd.Series | bytes | bytearray):
        return False
    if isinstance(item, float) and np.isnan(item):
        return True
    try:
        result = pd.isna(item)
        return False if isinstance(result, np.ndarray | pd.Series) else bool(result)
    except (TypeError, ValueError):
        return False


def _matches(item: Any, expected: Any) -> bool:
    if _is_null(item):
        return True
    if expected is bool:
        return isinstance(item, bool | np.bool_)
    if expected is int:
        if not isinstance(item, int | np.integer | Int64) or isinstance(item, bool | np.bool_):
            return False
        return _I64[0] <= int(item) <= _I64[1]
    if expected is float:
        return isinstance(item, float | np.floating) and not isinstance(
            item, bool | np.integer | int
        )
    if expected is str:
        return isinstance(item, str)
    return isinstance(item, expected)


def _converted(obj: Any, type_name: str, fn: Any) -> Any:
    _log.debug(f"Converting {obj} of type {type(obj)} to {type_name}.")
    try:
        return fn(obj)
    except (ValueError, TypeError, OverflowError):
        return None


def _to_json(obj: Any) -> Any:
    # json.dumps(o, default=str, cls=CustomJSONEncoder): default=str replaces the encoder's hook.
    return _converted(obj, "string", lambda o: json.dumps(o, default=str))


def _to_string(obj: Any) -> Any:
    if isinstance(obj, list | dict):
        return _to_json(obj)
    return _converted(obj, "string", lambda o: "" if _is_null(o) else str(o))


def _int64_value(obj: Any) -> Any:
    if _is_null(obj):
        return None
    if isinstance(obj, Decimal128):
        obj = int(obj.to_decimal())
    elif isinstance(obj, float | np.floating) and not float(obj).is_integer():
        raise ValueError(obj)
    obj = int(obj)
    if not _I64[0] <= obj <= _I64[1]:
        raise OverflowError(obj)
    return np.int64(obj)


def _float64_value(obj: Any) -> Any:
    if _is_null(obj):
        return None
    if isinstance(obj, Decimal128):
        return np.float64(obj.to_decimal())
    if isinstance(obj, float | np.floating | int | np.integer | str | bytes):
        return np.float64(obj)
    raise ValueError(obj)


def _to_bool(obj: Any) -> Any:
    def conv(o: Any) -> Any:
        if o == 0 or (isinstance(o, str) and o.lower() in ("0", "false")):
            return False
        if o == 1 or (isinstance(o, str) and o.lower() in ("1", "true")):
            return True
        return None

    return _converted(obj, "numpy.bool_", conv)


_CONVERTERS: dict[Any, Any] = {
    str: _to_string,
    ObjectId: _to_string,
    dict: _to_string,
    list: _to_string,
    int: lambda o: _converted(o, "numpy.int64", _int64_value),
    Int64: lambda o: _converted(o, "numpy.int64", _int64_value),
    np.int64: lambda o: _converted(o, "numpy.int64", _int64_value),
    float: lambda o: _converted(o, "numpy.float64", _float64_value),
    Decimal128: lambda o: _converted(o, "numpy.float64", _float64_value),
    np.float64: lambda o: _converted(o, "numpy.float64", _float64_value),
    bool: _to_bool,
    datetime.datetime: lambda o: _converted(o, "string", lambda d: d.isoformat()),
}


def _column_schema(dtype: Any, first: Any) -> tuple[Any, Any]:
    """schema_utils.init_column_schema: (python type, pandas dtype) of a new column."""
    item_type: Any = type(first)
    if _is_null(first):
        item_type, dtype = str, "object"  # (pandas-dtype inference of null columns elided)
    elif isinstance(first, _TO_STR):
        item_type = str
    if isinstance(first, Decimal128):
        item_type, dtype = float, "float64"
    return item_type, _DTYPE_FIXES.get(str(dtype), dtype)


def _strings(series: pd.Series) -> pd.Series:
    if is_object_dtype(series):
        series = series.map(
            lambda v: (
                ""
                if _is_null(v)
                else json.dumps(v, default=str)
                if isinstance(v, dict | list)
                else str(v)
            )
        )
    return series.astype("string")


def _cast(series: pd.Series, target: Any) -> pd.Series:
    """schema_utils._cast_column_to_schema_dtype."""
    t = str(target)
    if t in ("object", "string", "str") or t.startswith("string"):
        return _strings(series)
    if t == "boolean":
        return series.astype("boolean")
    if is_datetime64_any_dtype(series) or t.startswith("datetime"):
        series = pd.to_datetime(series, errors="coerce", utc=True).dt.tz_localize(None)
        return series.astype("datetime64[ms]")
    if t in ("float64", "Float64"):
        if (
            is_object_dtype(series)
            or series.map(lambda v: isinstance(v, Decimal128 | str | Int64)).any()
        ):
            series = series.map(_float64_value)
        return series.astype("float64")
    if t == "Int64":
        if is_object_dtype(series):
            series = series.map(_int64_value)
        return series.astype("Int64")
    return series.astype(target) if str(series.dtype) != t else series


def _first_item(series: pd.Series) -> Any:
    idx = series.first_valid_index()
    return series[idx] if idx is not None else series.iloc[0]


class PartnerAppBaseline:
    """One collection's init sync: schema bootstrap once, then the per-batch transform."""

    def __init__(self) -> None:
        self.schema: dict[str, tuple[Any, Any]] = {}

    def bootstrap(self, sample: list[dict[str, Any]]) -> None:
        df = pd.DataFrame(sample).convert_dtypes(dtype_backend="pyarrow")
        for col in df.columns:
            first = next((d[col] for d in sample if not _is_null(d.get(col))), None)
            self.schema[str(col).replace(" ", "_")[:128]] = _column_schema(df[col].dtype, first)

    def process_dataframe(self, df: pd.DataFrame) -> None:
        typed = df.convert_dtypes(dtype_backend="pyarrow")
        for col in typed.columns:
            df[col] = typed[col]
        for col in list(df.columns):
            dtype, first = df[col].dtype, _first_item(df[col])
            name = str(col).replace(" ", "_")[:128]
            if name not in self.schema:
                self.schema[name] = _column_schema(dtype, first)
            if name != col:
                df.rename(columns={col: name}, inplace=True)
            expected, target = self.schema[name]
            convert = _CONVERTERS.get(expected, lambda o: o)
            if any(not _matches(item, expected) for item in df[name]):
                out = []
                for idx, item in df[name].items():
                    _doc_id = df.at[idx, "_id"]  # kept for the app's conversion log
                    try:
                        out.append(convert(item))
                    except Exception:
                        out.append(None)
                df[name] = pd.Series(out, index=df[name].index)
            if expected in (int, Int64) and df[name].dtype == "float64":
                df[name] = df[name].astype("Int64")
            if is_datetime64_any_dtype(df[name]):
                df[name] = df[name].dt.tz_localize(None).astype("datetime64[ms]")
            if not (is_datetime64_any_dtype(df[name]) and is_object_dtype(target)):
                try:
                    df[name] = _cast(df[name], target)
                except (ValueError, TypeError, OverflowError):
                    pass

    def finalize(self, df: pd.DataFrame) -> None:
        ids = df["_id"]
        for col in df.columns:
            if col == "_id":
                continue
            if col in self.schema:
                try:
                    df[col] = _cast(df[col], self.schema[col][1])
                except (ValueError, TypeError, OverflowError):
                    df[col] = _strings(df[col])
            elif is_object_dtype(df[col]):
                df[col] = (
                    df[col]
                    .map(lambda v: float(v.to_decimal()) if isinstance(v, Decimal128) else v)
                    .astype(str)
                )
        df["_id"] = ids


def baseline(raws: list[bytes], batch: int) -> int:
    app = PartnerAppBaseline()
    # init_table_schema: a $sample of 4.9 % of the collection (here its first 4.9 %).
    app.bootstrap(bson.decode_all(b"".join(raws[: max(1, int(len(raws) * 0.049))])))
    size = 0
    for start in range(0, len(raws), batch):
        df = pd.DataFrame(bson.decode_all(b"".join(raws[start : start + batch])))
        app.process_dataframe(df)
        app.finalize(df)
        sink = io.BytesIO()
        df.to_parquet(sink, index=False)
        size += sink.tell()
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    raws = orders(args.docs)
    rates = {}
    for name, fn in (("baseline", baseline), ("ours", ours)):
        start = time.perf_counter()
        size = fn(raws, args.batch)
        elapsed = time.perf_counter() - start
        rates[name] = args.docs / elapsed
        print(f"{name}: {rates[name]:,.0f} docs/s ({args.docs} docs, {size / 1e6:.1f} MB parquet)")
    print(f"ratio_vs_baseline: {rates['ours'] / rates['baseline']:.1f}")


if __name__ == "__main__":
    main()
