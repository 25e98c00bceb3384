"""Tokenizer repairs as data, and the tokenizer check that fails loudly instead of training
silently wrong.

Converted tokenizers carry defects that ruin a tune. Two real cases: the pinned transformers
gives SmolLM2 ``<|im_start|>`` as eos and no pad (the GGUF says ``<|im_end|>``): a model that
does not stop at ``<|im_end|>`` never ends its answer. Gemma 3 270M comes without a chat
template and without its ``<bos>``: without ``<bos>`` greedy output degenerates ("is is is ...")."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipelines.config.base_models import (
    BaseModelSpec,
    TokenizerFixes,
)
from pipelines.config.paths import REPO_ROOT


class TokenizerCheckError(ValueError):
    """The materialised tokenizer would train or evaluate wrongly; the message lists why."""


# A conversation that exercises every part of a chat template: system, user, assistant.
_PROBE = [
    {"role": "system", "content": "Sort the ticket."},
    {"role": "user", "content": "The printer is on fire."},
    {"role": "assistant", "content": '{"category": "hardware"}'},
]


# Ordinary words a tokenizer with a large vocabulary keeps whole when they are entries
WORD_PROBE = "Hello support, my printer stopped working and I need a refund for the shipping on my account."


_WORD_MARKS = ("▁", "Ġ")  # SentencePiece's and byte-level BPE's leading-space mark


def split_whole_words(tokenizer, vocab: dict[str, int]) -> list[str]:
    """The words of ``WORD_PROBE`` that are one vocabulary entry (with the leading-space mark)
    but come out of the tokenizer in pieces, each as ``word -> piece piece ...``."""
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(WORD_PROBE, add_special_tokens=False)["input_ids"])
    split = []
    for word in re.findall(r"(?<= )[A-Za-z]+", WORD_PROBE):
        entries = [mark + word for mark in _WORD_MARKS if mark + word in vocab]
        if entries and not any(entry in tokens for entry in entries):
            start = WORD_PROBE.index(" " + word)
            alone = tokenizer(WORD_PROBE[start : start + len(word) + 1], add_special_tokens=False)["input_ids"]
            pieces = tokenizer.convert_ids_to_tokens(alone)
            split.append(f"{word!r} -> {' '.join(pieces)}")
    return split


MIN_CHARS_PER_TOKEN = 1.5  # English runs ~3-4 characters per token; a character-level tokenizer ~1


_MARKER = re.compile(r"<[^<>\s]{1,40}>")  # a template's control tokens: <bos>, <|im_end|>, <start_of_turn>


def resolve_chat_template(name: str) -> str:
    """``file:<path>`` (relative to the repo) or an Axolotl template name -> jinja text."""
    if name.startswith("file:"):
        path = Path(name[len("file:") :]).expanduser()
        path = path if path.is_absolute() else REPO_ROOT / path
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer.chat_template {name!r}: no file {path}")
        return path.read_text(encoding="utf-8")
    from axolotl.utils.chat_templates import get_chat_template

    return get_chat_template(name)


def rebuild_as_bpe(tokenizer) -> None:
    """Replace a converted Unigram model by the SentencePiece BPE its scores came from.

    transformers' GGUF conversion of Gemma builds a Unigram model over the BPE scores, and a
    Unigram prefers many cheap pieces to one late-merged word: `` printer`` -> ``▁p ri nt er``,
    `` account`` -> ``▁a cc ou nt``. A tune then decides on sub-word pieces (measured on the
    Gemma re-tune: the category's first piece was "ac" for every ticket, so every answer said
    "account"). BPE merges ranked by the merged piece's score (transformers' own
    ``generate_merges``) give back whole words: `` printer`` -> ``▁printer``."""
    from tokenizers import models
    from transformers.convert_slow_tokenizer import generate_merges

    backend = tokenizer.backend_tokenizer
    model = json.loads(backend.to_str())["model"]
    if model["type"] != "Unigram":
        raise ValueError(f"tokenizer.model: bpe rebuilds a Unigram model from its scores; this one is {model['type']}")
    pieces = model["vocab"]
    vocab = {piece: index for index, (piece, _score) in enumerate(pieces)}
    merges = generate_merges(vocab, pieces, skip_tokens=set(tokenizer.get_added_vocab()))
    unk = pieces[model["unk_id"]][0] if model.get("unk_id") is not None else None
    backend.model = models.BPE(
        vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=bool(model.get("byte_fallback"))
    )


def apply_tokenizer_fixes(tokenizer, fixes: TokenizerFixes, gguf: dict | None = None) -> bool:
    """Apply the GGUF's declared special tokens, then the registry's fixes (which win).
    Returns whether every prompt must start with the bos token."""
    gguf = gguf or {}
    if fixes.model == "bpe":
        rebuild_as_bpe(tokenizer)
    if gguf.get("eos"):
        tokenizer.eos_token = gguf["eos"]
    if gguf.get("pad"):
        tokenizer.pad_token = gguf["pad"]
    if gguf.get("bos") and tokenizer.bos_token is None:
        tokenizer.bos_token = gguf["bos"]
    for role in ("bos", "eos", "pad"):
        token = getattr(fixes, f"{role}_token")
        if token is not None:
            setattr(tokenizer, f"{role}_token", token)
    if fixes.special_tokens:
        vocab = tokenizer.get_vocab()
        unknown = [t for t in fixes.special_tokens if t not in vocab]
        if unknown:  # adding them would need new, untrained embeddings
            raise ValueError(f"tokenizer.special_tokens {unknown} are not in the model's vocabulary")
        tokenizer.add_tokens(list(fixes.special_tokens), special_tokens=True)
    if fixes.chat_template is not None:
        tokenizer.chat_template = resolve_chat_template(fixes.chat_template)
    return fixes.add_bos_token if fixes.add_bos_token is not None else bool(gguf.get("add_bos"))


def check_tokenizer(tokenizer, eot_tokens: list[str], needs_bos: bool) -> list[str]:
    """Why this tokenizer would train or evaluate wrongly (empty: fine). Training (Axolotl)
    and evaluation (pipelines.models.decoding) both tokenise the rendered template without adding
    special tokens, so the template alone decides what the model sees."""
    vocab = tokenizer.get_vocab()
    problems = []
    roles = ("eos", "pad", "bos") if needs_bos else ("eos", "pad")
    for role in roles:
        token = getattr(tokenizer, f"{role}_token")
        if token is None:
            problems.append(f"{role}_token is not set: set tokenizer.{role}_token")
        elif token not in vocab:
            problems.append(f"{role}_token {token!r} is not in the vocabulary")
    missing_eot = [t for t in eot_tokens if t not in vocab]
    if missing_eot:
        problems.append(f"eot_tokens {missing_eot} are not in the vocabulary")
    if not tokenizer.chat_template:
        return problems + ["no chat template: set tokenizer.chat_template (an Axolotl template name or file:<.jinja>)"]
    try:
        full = tokenizer.apply_chat_template(_PROBE, tokenize=False)
        prompt = tokenizer.apply_chat_template(_PROBE[:-1], tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # a jinja error: name it, whatever its type
        return problems + [f"the chat template fails on a system/user/assistant conversation: {exc}"]
    dropped = [m["role"] for m in _PROBE if m["content"] not in full]
    if dropped:
        problems.append(f"the chat template drops the {dropped} content")
    if not full.startswith(prompt):
        problems.append(
            "the generation prompt is not a prefix of the training text, so evaluation prompts differ "
            f"from what training showed: {prompt[-60:]!r} vs {full[len(prompt) - 60 : len(prompt)]!r}"
        )
    markup = full
    for message in _PROBE:
        markup = markup.replace(message["content"], " ")
    for marker in sorted(set(_MARKER.findall(markup))):
        pieces = tokenizer(marker, add_special_tokens=False)["input_ids"]
        if marker in vocab and pieces != [vocab[marker]]:
            problems.append(
                f"the template's {marker!r} is one vocabulary entry (id {vocab[marker]}) but is "
                f"tokenised as {len(pieces)} pieces: add it to tokenizer.special_tokens"
            )
    text = " ".join(m["content"] for m in _PROBE)
    pieces = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(text) / max(len(pieces), 1) < MIN_CHARS_PER_TOKEN:
        problems.append(
            f"ordinary text is split into (nearly) single characters: {len(pieces)} tokens for "
            f"{len(text)} characters ({tokenizer.convert_ids_to_tokens(pieces[:8])}): the tokenizer "
            "lost its merges or scores in conversion"
        )
    split = split_whole_words(tokenizer, vocab)
    if len(split) >= 2:
        problems.append(
            f"words that are single vocabulary entries are tokenised in pieces ({'; '.join(split[:3])}): "
            "the converted tokenizer segments text unlike the one the model was trained with (a Unigram built "
            "from BPE scores): set tokenizer.model: bpe"
        )
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    back = tokenizer.decode(ids, skip_special_tokens=False)
    if back != full:
        at = next((i for i, (a, b) in enumerate(zip(back, full)) if a != b), min(len(back), len(full)))
        problems.append(
            f"round trip: encode then decode changes the rendered text at char {at}: "
            f"{full[at : at + 30]!r} -> {back[at : at + 30]!r}"
        )
    answer = _PROBE[-1]["content"]
    if answer in full:
        after = tokenizer(full[full.rindex(answer) + len(answer) :], add_special_tokens=False)["input_ids"]
        terminator = tokenizer.convert_ids_to_tokens(after[0]) if after else None
        if terminator != tokenizer.eos_token:
            problems.append(
                f"the assistant turn ends with {terminator!r}, but eos_token is {tokenizer.eos_token!r}: "
                f"generation would not stop after an answer (set tokenizer.eos_token: {terminator!r})"
            )
        if terminator not in eot_tokens:
            problems.append(
                f"eot_tokens {eot_tokens} lack the turn terminator {terminator!r}: training would not "
                "learn to end an answer"
            )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    bos_id = tokenizer.bos_token_id
    leading = next((i for i, t in enumerate(prompt_ids) if t != bos_id), len(prompt_ids)) if bos_id is not None else 0
    if needs_bos and leading == 0:
        first = tokenizer.convert_ids_to_tokens(prompt_ids[0]) if prompt_ids else None
        problems.append(
            f"the model needs {tokenizer.bos_token!r} first, but the rendered prompt starts with "
            f"{first!r}: use a chat template that renders {{{{ bos_token }}}} first"
        )
    if leading > 1:
        problems.append(f"the rendered prompt starts with {leading} x {tokenizer.bos_token!r}: a doubled bos")
    return problems


def require_sound_tokenizer(spec: BaseModelSpec, tokenizer, needs_bos: bool) -> list[str]:
    """``check_tokenizer`` that raises, naming the registry entry; returns what was checked."""
    problems = check_tokenizer(tokenizer, list(spec.eot_tokens), needs_bos)
    if problems:
        raise TokenizerCheckError(check_failure_message(spec, problems))
    return passed_summary(tokenizer, needs_bos)


def check_failure_message(spec: BaseModelSpec, problems: list[str]) -> str:
    """What a failed tokenizer check says: the entry, each problem, and where the fix goes."""
    return (
        f"base model {spec.name!r}: tokenizer check failed (fix the entry's `tokenizer:` in base_models.yaml):\n- "
        + "\n- ".join(problems)
    )


def passed_summary(tokenizer, needs_bos: bool) -> list[str]:
    """What a passed tokenizer check verified, for the asset's metadata."""
    return [
        f"chat template round trip ok; turn ends with eos {tokenizer.eos_token!r}",
        f"pad {tokenizer.pad_token!r}; "
        + (f"bos {tokenizer.bos_token!r} first, once" if needs_bos else "no bos required"),
    ]


def require_same_after_reload(spec: BaseModelSpec, tokenizer, folder: Path) -> None:
    """The tokenizer saved in ``folder`` must encode the probe exactly as the one in memory:
    training and evaluation only ever see the saved one."""
    from transformers import AutoTokenizer

    rendered = tokenizer.apply_chat_template(_PROBE, tokenize=False) if tokenizer.chat_template else ""
    text = rendered or " ".join(m["content"] for m in _PROBE)
    before = tokenizer(text, add_special_tokens=False)["input_ids"]
    reloaded = AutoTokenizer.from_pretrained(folder)
    after = reloaded(text, add_special_tokens=False)["input_ids"]
    if before != after:
        raise TokenizerCheckError(
            f"base model {spec.name!r}: the tokenizer saved to {folder.name} encodes differently after reloading "
            f"({type(reloaded).__name__}: {len(after)} tokens, {reloaded.convert_ids_to_tokens(after[:8])} vs "
            f"{len(before)}, {tokenizer.convert_ids_to_tokens(before[:8])}): set tokenizer.tokenizer_class"
        )


def save_tokenizer(spec: BaseModelSpec, tokenizer, folder: Path) -> None:
    """Save, with the registry's ``tokenizer_class`` if set (the class a reload builds), then
    check that the reloaded tokenizer encodes as this one does."""
    tokenizer.save_pretrained(folder)
    if spec.tokenizer.tokenizer_class:
        path = folder / "tokenizer_config.json"
        config = json.loads(path.read_text(encoding="utf-8"))
        config["tokenizer_class"] = spec.tokenizer.tokenizer_class
        path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    require_same_after_reload(spec, tokenizer, folder)


def token_ids(tokenizer) -> dict[str, int]:
    """bos/eos/pad ids the model's configs must agree with (generation stops on eos)."""
    ids = {role: getattr(tokenizer, f"{role}_token_id") for role in ("bos", "eos", "pad")}
    return {role: token_id for role, token_id in ids.items() if token_id is not None}
