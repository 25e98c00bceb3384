"""Stable hashes: of JSON-able data (canonical JSON), of a file, of a folder."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def sha256_json(data: Any) -> str:
    """A stable hash of JSON-able data (sorted keys)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
