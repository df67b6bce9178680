"""Masking secrets in text that may reach a message or a log line."""

from __future__ import annotations

import re

_STORAGE_SECRET = re.compile(r"(?i)\b(accountkey|sharedaccesssignature|sig)=[^;&\s]*")
_URI_CREDENTIALS = re.compile(r"(?<=://)[^@/\s:]*:[^@/\s]*@")  # user:password@


def redact(text: str) -> str:
    """``text`` with storage account keys, SAS signatures and URI user:password masked."""
    text = _STORAGE_SECRET.sub(lambda match: f"{match[1]}=***", text)
    return _URI_CREDENTIALS.sub("***@", text)
