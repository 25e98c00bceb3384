"""Validation and normalisation of source rows: every reason, every kind, nothing lost."""

import json
import re

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.config.sources import SourceSpec
from pipelines.data import headers, quality, rejects, validate

SYSTEM = "Classify the ticket."
ANSWER = json.dumps({"category": "billing", "priority": "low"})


def jsonl_spec(path, **extra) -> SourceSpec:
    return SourceSpec(
        name="tickets",
        kind="jsonl",
        path=str(path),
        fields={"messages": "messages"},
        label="category",
        system_prompt=SYSTEM,
        **extra,
    )


def chat(user="I was charged twice.", answer=ANSWER, **extra) -> bytes:
    return json.dumps(
        {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}], **extra}
    ).encode()


def run(tmp_path, lines: list[bytes], max_chars=200) -> rejects.IngestResult:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return validate.ingest(jsonl_spec(path), max_chars)


CASES = [
    (b'{"messages": [', rejects.INVALID_JSON),
    (b"[1, 2]", rejects.INVALID_JSON),
    (chat(user="caf\u00e9 bill").replace(b"\\u00e9", b"\xe9"), rejects.INVALID_UTF8),
    (json.dumps({"text": "hi"}).encode(), rejects.MISSING_FIELD),
    (json.dumps({"messages": "hi"}).encode(), rejects.MISSING_FIELD),
    (json.dumps({"messages": [{"role": "user"}]}).encode(), rejects.MISSING_FIELD),
    (chat(answer="billing, low"), rejects.MISSING_FIELD),  # label not in the JSON answer
    (chat(user=42), rejects.NON_STRING),
    (chat(user=None), rejects.NON_STRING),
    (chat(user="  \n "), rejects.EMPTY),
    (chat(user="x" * 201), rejects.TOO_LONG),
    (
        json.dumps(
            {"messages": [{"role": "assistant", "content": ANSWER}, {"role": "user", "content": "hi"}]}
        ).encode(),
        rejects.ROLE_ORDER,
    ),
    (json.dumps({"messages": [{"role": "user", "content": "a"}]}).encode(), rejects.ROLE_ORDER),
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
    assert {reason for _, reason in CASES} == set(rejects.REASONS)


def test_record_is_normalised(tmp_path):
    own_system = json.dumps(
        {
            "messages": [
                {"role": "system", "content": "Own prompt"},
                {"role": "user", "content": " Hi\r\nthere "},
                {"role": "assistant", "content": ANSWER},
            ]
        }
    ).encode()
    result = run(tmp_path, [chat(), b"", own_system])
    first, second = result.records
    assert first == {
        "id": "tickets-1",
        "source": "tickets",
        "label": "billing",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "I was charged twice."},
            {"role": "assistant", "content": ANSWER},
        ],
    }
    assert second["id"] == "tickets-3"  # blank lines are not rows, but line numbers stay true
    assert second["messages"][:2] == [
        {"role": "system", "content": "Own prompt"},
        {"role": "user", "content": "Hi\nthere"},
    ]


def test_csv_columns_and_row_label(tmp_path):
    path = tmp_path / "rows.csv"
    pd.DataFrame(
        {"q": ["Where is my parcel?", ""], "a": ['{"priority": "low"}', "x"], "cat": ["shipping", "refund"]}
    ).to_csv(path, index=False)
    spec = SourceSpec(name="partner", kind="csv", path=str(path), fields={"user": "q", "assistant": "a"}, label="cat")
    result = validate.ingest(spec, 100)
    assert [r["label"] for r in result.records] == ["shipping"]
    assert result.records[0]["messages"][0] == {"role": "user", "content": "Where is my parcel?"}
    assert [(q["row"], q["reason"]) for q in result.quarantined] == [(2, rejects.EMPTY)]


def test_csv_missing_column_is_a_config_error(tmp_path):
    path = tmp_path / "rows.csv"
    pd.DataFrame({"question": ["hi"], "a": ["x"]}).to_csv(path, index=False)
    spec = SourceSpec(name="partner", kind="csv", path=str(path), fields={"user": "q", "assistant": "a"})
    with pytest.raises(rejects.SourceError, match=r"'partner'.*no column.*\['q'\].*fields"):
        validate.ingest(spec, 100)


def test_parquet_and_hf_disk_and_python_kinds(tmp_path):
    import datasets

    rows = [{"messages": [{"role": "user", "content": "Card declined"}, {"role": "assistant", "content": ANSWER}]}]
    pd.DataFrame(rows).to_parquet(tmp_path / "rows.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    specs = [
        SourceSpec(name="pq", kind="parquet", path=str(tmp_path / "rows.parquet"), fields={"messages": "messages"}),
        SourceSpec(name="hf", kind="hf_disk", path=str(tmp_path / "ds"), fields={"messages": "messages"}),
        SourceSpec(
            name="py", kind="python", function="tests.test_ingest:python_rows", fields={"user": "q", "assistant": "a"}
        ),
    ]
    for spec in specs:
        result = validate.ingest(spec, 100)
        assert len(result.records) == 1 and not result.quarantined, spec.name
        assert result.records[0]["messages"][-1] == {"role": "assistant", "content": ANSWER}


def python_rows():
    """Rows for the ``kind: python`` test above."""
    return [{"q": "Card declined", "a": ANSWER}]


def test_missing_file_names_the_source_and_the_fix(tmp_path):
    with pytest.raises(rejects.SourceError, match=r"'tickets'.*not found.*fix `path:`"):
        validate.ingest(jsonl_spec(tmp_path / "nope.jsonl"), 100)


def test_reject_rate_threshold_names_source_and_file(tmp_path):
    result = run(tmp_path, [chat(), b"{bad", b"{bad", b"{bad"])
    spec = jsonl_spec(tmp_path / "rows.jsonl")
    quality.check_reject_rate(result, spec, 0.75)  # 75 % is not above 75 %
    with pytest.raises(rejects.SourceError, match=r"'tickets' \(.*rows.jsonl\): 3 of 4 rows \(75%\).*invalid_json"):
        quality.check_reject_rate(result, spec, 0.20)


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
    if lines and lines[0].startswith(b"\xef\xbb\xbf"):  # a byte-order mark on line 1 is not content
        lines[0] = lines[0][3:]
    non_blank = [line for line in lines if line.strip()]
    assert result.rows_in == len(result.records) + len(result.quarantined) == len(non_blank)
    rows = sorted([int(r["id"].rsplit("-", 1)[1]) for r in result.records] + [q["row"] for q in result.quarantined])
    assert len(set(rows)) == len(rows)  # each row exactly once


# --------------------------------------------------------------------------- issue 18: data engineers adding sources
def csv_spec(path, **extra) -> SourceSpec:
    return SourceSpec(name="partner", kind="csv", path=str(path), fields={"user": "q", "assistant": "a"}, **extra)


EMPTY_FILES = [
    ("rows.csv", b"", "0 bytes"),
    ("rows.csv", b"q,a\n", "header ['q', 'a'] but no data rows"),
    ("rows.jsonl", b"", "0 bytes"),
    ("rows.jsonl", b"\n \n", "only blank lines"),
]


@pytest.mark.parametrize("name, content, why", EMPTY_FILES)
def test_a_source_with_no_rows_fails_naming_file_and_source(tmp_path, name, content, why):
    """An emptied export must not silently shrink the training data (it used to pass with 0 rows,
    or fail with pandas' bare EmptyDataError)."""
    path = tmp_path / name
    path.write_bytes(content)
    spec = csv_spec(path) if name.endswith(".csv") else jsonl_spec(path)
    result = validate.ingest(spec, 100)
    assert result.rows_in == 0
    expected = rf"source '{spec.name}': no rows: .*rows\.\w+ .*{re.escape(why)}.*allow_empty: true"
    with pytest.raises(rejects.SourceError, match=expected):
        quality.check_not_empty(result, spec)
    allowed = spec.model_copy(update={"allow_empty": True})
    assert "allow_empty" in quality.check_not_empty(validate.ingest(allowed, 100), allowed)  # a warning, not a failure


def test_read_errors_name_file_source_and_fix(tmp_path):
    cp1252 = tmp_path / "cp1252.csv"
    cp1252.write_bytes("q,a\nCaf\u00e9 bill,x\n".encode("cp1252"))
    expected = r"source 'partner' \(.*cp1252.csv\): not utf-8.*read: \{encoding: cp1252\}"
    with pytest.raises(rejects.SourceError, match=expected):
        validate.ingest(csv_spec(cp1252), 100)
    fixed = validate.ingest(csv_spec(cp1252, read={"encoding": "cp1252"}), 100)
    assert fixed.records[0]["messages"][0]["content"] == "Caf\u00e9 bill"

    broken = tmp_path / "broken.csv"
    broken.write_text('q,a\n"unclosed,x\nmore,y\n')
    with pytest.raises(
        rejects.SourceError, match=r"source 'partner' \(.*broken.csv\): cannot parse it as CSV.*quoting"
    ):
        validate.ingest(csv_spec(broken), 100)

    not_parquet = tmp_path / "rows.parquet"
    not_parquet.write_bytes(b"q,a\nhi,there\n")
    spec = SourceSpec(name="pq", kind="parquet", path=str(not_parquet), fields={"user": "q", "assistant": "a"})
    with pytest.raises(rejects.SourceError, match=r"source 'pq' \(.*rows.parquet\): cannot read it as parquet"):
        validate.ingest(spec, 100)


def test_semicolon_csv_hints_delimiter_and_the_option_reads_it(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text('q;a\nWhere is my parcel?;{"category": "shipping"}\n')
    with pytest.raises(rejects.SourceError, match=r"one column 'q;a'.*read: \{delimiter: ';'\}"):
        validate.ingest(csv_spec(path), 100)
    for option in ({"delimiter": ";"}, {"sep": ";"}):
        result = validate.ingest(csv_spec(path, read=option, label="category"), 100)
        assert [r["label"] for r in result.records] == ["shipping"]


def test_csv_quoting_option_is_passed_to_pandas(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text('q,a\n"He said ""hi""",x\n')
    quoted = validate.ingest(csv_spec(path), 100).records[0]["messages"][0]["content"]
    raw = validate.ingest(csv_spec(path, read={"quoting": "none"}), 100).records[0]["messages"][0]["content"]
    assert (quoted, raw) == ('He said "hi"', '"He said ""hi"""')


def test_reader_options_are_validated_when_sources_load(tmp_path):
    from pipelines.config.base import ConfigError
    from pipelines.config.sources import load_sources

    path = tmp_path / "sources.yaml"
    for read, message in [
        ("{delimeter: ';'}", r"read.delimeter: unknown key.*allows read: delimiter, sep"),
        ("{encoding: cp9999}", r"unknown encoding 'cp9999'"),
        ("{quoting: sometimes}", r"read.quoting: .*'minimal'"),
    ]:
        path.write_text(
            f"sources:\n  - {{name: a, kind: csv, path: x.csv, fields: {{user: q, assistant: a}}, read: {read}}}\n"
        )
        with pytest.raises(ConfigError, match=rf"source 'a': .*{message}"):
            load_sources(path)
    path.write_text(
        "sources:\n  - {name: a, kind: hf_disk, path: ds, fields: {messages: m}, read: {encoding: utf-8}}\n"
    )
    with pytest.raises(ConfigError, match=r"kind `hf_disk` allows read: \(none\)"):
        load_sources(path)


def test_reject_rate_failure_names_the_dominant_detail_and_quarantine_file(tmp_path):
    """`missing_field x200. Fix the file or its 'fields:' mapping` hid the real cause (a label typo)."""
    (tmp_path / "rows.jsonl").write_bytes(b"\n".join(chat(user=f"Ticket {i}") for i in range(5)) + b"\n")
    typo = jsonl_spec(tmp_path / "rows.jsonl").model_copy(update={"label": "categroy"})
    quarantine = tmp_path / "quarantine" / "tickets.jsonl"
    with pytest.raises(rejects.SourceError) as error:
        quality.check_reject_rate(validate.ingest(typo, 100), typo, 0.2, quarantine)
    message = str(error.value)
    assert "missing_field x5: label 'categroy' is neither a row field nor a key of the JSON answer" in message
    assert "fix `label:`" in message and "`fields:`" not in message
    assert str(quarantine) in message


def test_reject_rate_suggests_fields_only_when_a_mapped_field_is_missing(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\n".join([chat()] + [json.dumps({"turns": []}).encode()] * 4) + b"\n")
    spec = jsonl_spec(path)
    expected = r"Most common: missing_field x4: field 'messages' missing.*fix `fields:`"
    with pytest.raises(rejects.SourceError, match=expected):
        quality.check_reject_rate(validate.ingest(spec, 100), spec, 0.2)
    path.write_bytes(b"\n".join([chat()] + [b"{bad"] * 4) + b"\n")
    with pytest.raises(rejects.SourceError) as error:
        quality.check_reject_rate(validate.ingest(spec, 100), spec, 0.2)
    assert "invalid_json x4" in str(error.value) and "`fields:`" not in str(error.value)


def test_glob_path_reads_every_matching_file_with_unique_ids(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    pd.DataFrame({"q": ["one", "two"], "a": ["x", "y"]}).to_csv(folder / "2024-01.csv", index=False)
    pd.DataFrame({"q": ["three", ""], "a": ["z", "w"]}).to_csv(folder / "2024-02.csv", index=False)
    (folder / "notes.txt").write_text("not data")
    result = validate.ingest(csv_spec(folder / "*.csv"), 100)
    assert [r["id"] for r in result.records] == ["partner-1-1", "partner-1-2", "partner-2-1"]
    assert [(q["file"], q["row"]) for q in result.quarantined] == [(str(folder / "2024-02.csv"), 2)]
    with pytest.raises(rejects.SourceError, match=r"no file matches `path: .*\*.tsv`"):
        validate.ingest(csv_spec(folder / "*.tsv"), 100)


def test_relative_path_and_python_module_resolve_next_to_the_sources_file(tmp_path, monkeypatch):
    from pipelines.config.sources import load_sources

    elsewhere = tmp_path / "team"
    (elsewhere / "data").mkdir(parents=True)
    (elsewhere / "data" / "rows.jsonl").write_bytes(chat() + b"\n")
    (elsewhere / "team_rows_mod.py").write_text("def rows():\n    return [{'q': 'Card declined', 'a': 'x'}]\n")
    (elsewhere / "sources.yaml").write_text(
        "sources:\n"
        "  - {name: rel, kind: jsonl, path: data/rows.jsonl, fields: {messages: messages}}\n"
        "  - {name: mod, kind: python, function: 'team_rows_mod:rows', fields: {user: q, assistant: a}}\n"
    )
    monkeypatch.chdir(tmp_path)  # neither the repo nor the yaml's folder
    rel, mod = load_sources(elsewhere / "sources.yaml")
    assert rel.resolved_path() == elsewhere / "data" / "rows.jsonl"
    assert len(validate.ingest(rel, 100).records) == 1
    assert validate.ingest(mod, 100).records[0]["messages"][0]["content"] == "Card declined"
    import sys

    assert str(elsewhere) not in sys.path  # only for that import


def test_fields_mapping_is_checked_against_the_header_when_sources_load(tmp_path):
    from pipelines.config.base import ConfigError
    from pipelines.config.sources import load_sources

    pd.DataFrame({"question": ["hi"], "answer": ["x"]}).to_csv(tmp_path / "rows.csv", index=False)
    pd.DataFrame({"question": ["hi"], "answer": ["x"]}).to_parquet(tmp_path / "rows.parquet")
    (tmp_path / "rows.jsonl").write_bytes(json.dumps({"question": "hi", "answer": "x"}).encode() + b"\n")
    sources = tmp_path / "sources.yaml"
    for kind in ("csv", "parquet", "jsonl"):
        sources.write_text(
            f"sources:\n  - {{name: s, kind: {kind}, path: rows.{kind}, "
            "fields: {user: question, assistant: answr}}\n"
        )
        expected = rf"sources.yaml: source 's': .*rows.{kind} has no column\(s\) \['answr'\]"
        with pytest.raises(ConfigError, match=expected):
            headers.check_headers(load_sources(sources), sources)
        sources.write_text(sources.read_text().replace("answr", "answer"))
        headers.check_headers(specs := load_sources(sources), sources)
        assert [s.name for s in specs] == ["s"]
    sources.write_text("sources:\n  - {name: s, kind: csv, path: later.csv, fields: {user: q, assistant: a}}\n")
    headers.check_headers(specs := load_sources(sources), sources)  # not there yet: the run reports it
    assert specs


def test_misconfigured_source_is_a_short_message_first(tmp_path):
    """`kind: parqet` used to be the last line of a 73-line traceback (pydantic's, chained)."""
    from pipelines.config.base import ConfigError
    from pipelines.config.sources import load_sources

    path = tmp_path / "sources.yaml"
    path.write_text(
        "sources:\n  - {name: ok, kind: jsonl, path: x.jsonl, fields: {messages: m}}\n"
        "  - {name: helpdesk, kind: parqet, path: x.parquet, fields: {user: q, assistant: a}}\n"
    )
    with pytest.raises(ConfigError) as error:
        load_sources(path)
    message = str(error.value)
    assert message.startswith(f"{path}: source 'helpdesk': kind: ")
    assert "'parquet'" in message and "got 'parqet'" in message and "entry 2" in message
    assert len(message.splitlines()) <= 4
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_jsonl_byte_order_mark_is_not_a_bad_row(tmp_path):
    result = run(tmp_path, [b"\xef\xbb\xbf" + chat(), chat(user="second")])
    assert len(result.records) == 2 and not result.quarantined
