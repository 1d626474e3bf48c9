"""Keep secrets out of log lines: a logging filter for the web server's loggers.

The API never logs a token itself, and refuses tokens in URLs; but uvicorn writes the
request path with its query string (``"WebSocket /ws/live?token=..." [accepted]``, and
access lines when enabled) before any route has refused it. This filter rewrites such
records: ``token=``/``access_token=``/``ticket=`` query values, ``Bearer`` credentials,
session cookie values and anything shaped like an API token (``flt_...``) become ``***``.
"""

from __future__ import annotations

import logging
import re
from typing import Final

__all__ = ["SERVER_LOGGERS", "RedactSecrets", "install", "redact"]

SERVER_LOGGERS: Final = ("uvicorn", "uvicorn.error", "uvicorn.access")
_PATTERNS: Final = (
    re.compile(r"(?i)(\b(?:token|access_token|ticket)=)[^&\s\"']+"),
    re.compile(r"(?i)(\bbearer\s+)[^\s\"',;]+"),
    re.compile(r"(\bfleet_session=)[^\s\"',;]+"),
    re.compile(r"()\bflt_[A-Za-z0-9_-]{8,}"),
)


def redact(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(r"\1***", text)
    return text


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True  # a broken record: leave it to the handler to report
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_FILTER: Final = RedactSecrets()


def install() -> None:
    """Add the filter to the web server's loggers (idempotent)."""
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
