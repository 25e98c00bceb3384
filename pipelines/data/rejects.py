"""Why a row is quarantined (stable reason codes, counted and shown in the UI), the source
error, and the result of ingesting one source: ``rows_in == rows_kept + rows_quarantined``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Quarantine reasons (stable codes: they are counted and shown in the UI).
INVALID_UTF8 = "invalid_utf8"


INVALID_JSON = "invalid_json"


MISSING_FIELD = "missing_field"


NON_STRING = "non_string_content"


EMPTY = "empty_content"


ROLE_ORDER = "wrong_role_order"


TOO_LONG = "too_long"


REASONS = (INVALID_UTF8, INVALID_JSON, MISSING_FIELD, NON_STRING, EMPTY, ROLE_ORDER, TOO_LONG)


class SourceError(ValueError):
    """A source cannot be loaded or is mostly garbage; the message names the source and the fix."""


class Rejected(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass
class IngestResult:
    source: str
    records: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows_in(self) -> int:
        return len(self.records) + len(self.quarantined)

    @property
    def reasons(self) -> Counter:
        return Counter(q["reason"] for q in self.quarantined)

    @property
    def reject_rate(self) -> float:
        """The quarantined share of the rows (0 for a source with no rows)."""
        return len(self.quarantined) / max(1, self.rows_in)
