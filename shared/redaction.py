"""Masking secrets in text that may reach a message or a log line."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_STORAGE_SECRET = re.compile(r"(?i)\b(accountkey|sharedaccesssignature|sig)=[^;&\s]*")
_URI_CREDENTIALS = re.compile(r"(?<=://)[^@/\s:]*:[^@/\s]*@")  # user:password@


def redact(text: str) -> str:
    """``text`` with storage account keys, SAS signatures and URI user:password masked."""
    text = _STORAGE_SECRET.sub(lambda match: f"{match[1]}=***", text)
    return _URI_CREDENTIALS.sub("***@", text)


def redact_url(url: str) -> str:
    """``url`` without query, fragment or user info (where SAS tokens and passwords hide)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url.split("?")[0].split("#")[0])
    host = parts.netloc.rpartition("@")[2]
    return redact(f"{parts.scheme}://{host}{parts.path}" if parts.scheme else parts.path)
