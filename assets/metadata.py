"""The one converter from a record's ``metadata()`` (pipelines/common/metadata.py, the
engines' neutral vocabulary) to Dagster metadata values."""

import dagster as dg

from pipelines.common.metadata import JsonValue, Markdown, Metadata, PathValue


def to_dagster(metadata: Metadata) -> dict[str, dg.MetadataValue]:
    return {key: _value(key, value) for key, value in metadata.items()}


def _value(key: str, value) -> dg.MetadataValue:
    if isinstance(value, Markdown):
        return dg.MetadataValue.md(value.text)
    if isinstance(value, PathValue):
        return dg.MetadataValue.path(value.path)
    if isinstance(value, JsonValue):
        return dg.MetadataValue.json(value.value)
    if isinstance(value, bool):  # before int: a bool is an int
        return dg.MetadataValue.bool(value)
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    if isinstance(value, float):
        return dg.MetadataValue.float(value)
    if isinstance(value, str):
        return dg.MetadataValue.text(value)
    if value is None:
        return dg.MetadataValue.null()
    raise TypeError(f"metadata {key!r}: {type(value).__name__} is not a metadata value (pipelines/common/metadata.py)")
