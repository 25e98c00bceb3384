"""Validation and normalisation of source rows: every reason, every kind, nothing lost."""

import json

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines import ingest
from pipelines.config import SourceSpec

SYSTEM = "Classify the ticket."
ANSWER = json.dumps({"category": "billing", "priority": "low"})


def jsonl_spec(path, **extra) -> SourceSpec:
    return SourceSpec(name="tickets", kind="jsonl", path=str(path), fields={"messages": "messages"},
                      label="category", system_prompt=SYSTEM, **extra)


def chat(user="I was charged twice.", answer=ANSWER, **extra) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": user},
                                    {"role": "assistant", "content": answer}], **extra}).encode()


def run(tmp_path, lines: list[bytes], max_chars=200) -> ingest.IngestResult:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return ingest.ingest(jsonl_spec(path), max_chars)


CASES = [
    (b'{"messages": [', ingest.INVALID_JSON),
    (b"[1, 2]", ingest.INVALID_JSON),
    (chat(user="caf\u00e9 bill").replace(b"\\u00e9", b"\xe9"), ingest.INVALID_UTF8),
    (json.dumps({"text": "hi"}).encode(), ingest.MISSING_FIELD),
    (json.dumps({"messages": "hi"}).encode(), ingest.MISSING_FIELD),
    (json.dumps({"messages": [{"role": "user"}]}).encode(), ingest.MISSING_FIELD),
    (chat(answer="billing, low"), ingest.MISSING_FIELD),  # label not in the JSON answer
    (chat(user=42), ingest.NON_STRING),
    (chat(user=None), ingest.NON_STRING),
    (chat(user="  \n "), ingest.EMPTY),
    (chat(user="x" * 201), ingest.TOO_LONG),
    (json.dumps({"messages": [{"role": "assistant", "content": ANSWER},
                              {"role": "user", "content": "hi"}]}).encode(), ingest.ROLE_ORDER),
    (json.dumps({"messages": [{"role": "user", "content": "a"}]}).encode(), ingest.ROLE_ORDER),
]


@pytest.mark.parametrize("line, reason", CASES)
def test_each_reason_is_quarantined_with_row_number(tmp_path, line, reason):
    result = run(tmp_path, [chat(), line, chat(user="Second good ticket.")])
    assert [q["reason"] for q in result.quarantined] == [reason]
    assert result.quarantined[0]["row"] == 2 and result.quarantined[0]["source"] == "tickets"
    assert result.quarantined[0]["detail"]
    json.dumps(result.quarantined[0])  # the raw row survives as JSON, even invalid bytes
    assert len(result.records) == 2 and result.rows_in == 3


def test_cases_cover_every_reason():
    assert {reason for _, reason in CASES} == set(ingest.REASONS)


def test_record_is_normalised(tmp_path):
    own_system = json.dumps({"messages": [{"role": "system", "content": "Own prompt"},
                                          {"role": "user", "content": " Hi\r\nthere "},
                                          {"role": "assistant", "content": ANSWER}]}).encode()
    result = run(tmp_path, [chat(), b"", own_system])
    first, second = result.records
    assert first == {"id": "tickets-1", "source": "tickets", "label": "billing", "messages": [
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": "I was charged twice."},
        {"role": "assistant", "content": ANSWER}]}
    assert second["id"] == "tickets-3"  # blank lines are not rows, but line numbers stay true
    assert second["messages"][:2] == [{"role": "system", "content": "Own prompt"},
                                      {"role": "user", "content": "Hi\nthere"}]


def test_csv_columns_and_row_label(tmp_path):
    path = tmp_path / "rows.csv"
    pd.DataFrame({"q": ["Where is my parcel?", ""], "a": ['{"priority": "low"}', "x"],
                  "cat": ["shipping", "refund"]}).to_csv(path, index=False)
    spec = SourceSpec(name="partner", kind="csv", path=str(path), fields={"user": "q", "assistant": "a"},
                      label="cat")
    result = ingest.ingest(spec, 100)
    assert [r["label"] for r in result.records] == ["shipping"]
    assert result.records[0]["messages"][0] == {"role": "user", "content": "Where is my parcel?"}
    assert [(q["row"], q["reason"]) for q in result.quarantined] == [(2, ingest.EMPTY)]


def test_csv_missing_column_is_a_config_error(tmp_path):
    path = tmp_path / "rows.csv"
    pd.DataFrame({"question": ["hi"], "a": ["x"]}).to_csv(path, index=False)
    spec = SourceSpec(name="partner", kind="csv", path=str(path), fields={"user": "q", "assistant": "a"})
    with pytest.raises(ingest.SourceError, match=r"'partner'.*no column.*\['q'\].*fields"):
        ingest.ingest(spec, 100)


def test_parquet_and_hf_disk_and_python_kinds(tmp_path):
    import datasets

    rows = [{"messages": [{"role": "user", "content": "Card declined"},
                          {"role": "assistant", "content": ANSWER}]}]
    pd.DataFrame(rows).to_parquet(tmp_path / "rows.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    specs = [
        SourceSpec(name="pq", kind="parquet", path=str(tmp_path / "rows.parquet"), fields={"messages": "messages"}),
        SourceSpec(name="hf", kind="hf_disk", path=str(tmp_path / "ds"), fields={"messages": "messages"}),
        SourceSpec(name="py", kind="python", function="tests.test_ingest:python_rows",
                   fields={"user": "q", "assistant": "a"}),
    ]
    for spec in specs:
        result = ingest.ingest(spec, 100)
        assert len(result.records) == 1 and not result.quarantined, spec.name
        assert result.records[0]["messages"][-1] == {"role": "assistant", "content": ANSWER}


def python_rows():
    """Rows for the ``kind: python`` test above."""
    return [{"q": "Card declined", "a": ANSWER}]


def test_missing_file_names_the_source_and_the_fix(tmp_path):
    with pytest.raises(ingest.SourceError, match=r"'tickets'.*not found.*fix `path:`"):
        ingest.ingest(jsonl_spec(tmp_path / "nope.jsonl"), 100)


def test_reject_rate_threshold_names_source_and_file(tmp_path):
    result = run(tmp_path, [chat(), b"{bad", b"{bad", b"{bad"])
    spec = jsonl_spec(tmp_path / "rows.jsonl")
    ingest.check_reject_rate(result, spec, 0.75)  # 75 % is not above 75 %
    with pytest.raises(ingest.SourceError, match=r"'tickets' \(.*rows.jsonl\): 3 of 4 rows \(75%\).*invalid_json"):
        ingest.check_reject_rate(result, spec, 0.20)


LINES = st.one_of(
    st.builds(lambda u: chat(user=u), st.text(max_size=30)),
    st.binary(max_size=30),
    st.sampled_from([b'{"messages": 1}', b"{", b"\xff\xfe", b"null", chat(user=7)]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(LINES, max_size=25))
def test_accounting_invariant(tmp_path, lines):
    lines = [line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines]
    result = run(tmp_path, lines, max_chars=20)
    non_blank = [line for line in lines if line.strip()]
    assert result.rows_in == len(result.records) + len(result.quarantined) == len(non_blank)
    rows = sorted([int(r["id"].rsplit("-", 1)[1]) for r in result.records] + [q["row"] for q in result.quarantined])
    assert len(set(rows)) == len(rows)  # each row exactly once
