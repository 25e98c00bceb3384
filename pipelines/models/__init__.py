"""Base models and contenders: GGUF assembly and conversion, tokenizer fixes and checks, the
model cache, artefact identity, loading, greedy decoding and merging. No Dagster."""
