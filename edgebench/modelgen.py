"""Small random-weight llama-architecture GGUF models for the demo, tests and benchmarks.

The weights are random, so the text is gibberish, but the file is a real GGUF that
llama.cpp loads and runs at the speed its size implies. The vocabulary is a real
SentencePiece-style one (control tokens, 256 byte-fallback tokens, a few hundred pieces),
so tokenization and detokenization take the same code paths as with a real model.
"""

from __future__ import annotations

import hashlib
import os
import string
from dataclasses import asdict, dataclass
from pathlib import Path

_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "they",
    "you",
    "were",
    "her",
    "she",
    "there",
    "been",
    "one",
    "all",
    "we",
    "their",
    "has",
    "would",
    "when",
    "what",
    "will",
    "more",
    "if",
    "no",
    "out",
    "so",
    "said",
    "can",
    "who",
    "about",
    "up",
    "them",
    "some",
    "could",
    "him",
    "into",
    "its",
    "then",
    "two",
    "time",
    "my",
    "only",
    "other",
    "new",
    "like",
    "now",
    "over",
    "such",
    "these",
    "first",
    "any",
    "may",
    "see",
    "most",
    "very",
    "model",
    "token",
    "edge",
    "device",
    "power",
    "energy",
    "latency",
    "memory",
    "fast",
    "small",
    "bench",
    "run",
    "test",
    "measure",
    "result",
    "agent",
    "job",
    "queue",
    "heat",
    "clock",
    "core",
    "chip",
    "board",
    "watt",
    "joule",
    "second",
]
_SUBWORDS = ("ing", "ed", "er", "ly", "es", "tion", "th", "he", "in", "an", "re", "on", "at")


@dataclass(frozen=True)
class TinyLlamaSpec:
    n_embd: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_head_kv: int = 4
    n_ff: int = 768
    n_ctx: int = 2048
    seed: int = 1234

    def cache_key(self) -> str:
        text = repr(sorted(asdict(self).items())) + "|vocab-v1"
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def build_vocab() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types (gguf.TokenType values) of the test vocabulary."""
    unknown, control, normal, byte = 2, 3, 1, 6
    tokens = ["<unk>", "<s>", "</s>"]
    types = [unknown, control, control]
    tokens += [f"<0x{i:02X}>" for i in range(256)]
    types += [byte] * 256
    pieces = ["▁"]
    pieces += list(string.ascii_lowercase) + list(string.ascii_uppercase)
    pieces += list(string.digits) + list(".,;:!?'\"()-")
    pieces += [f"▁{w}" for w in _WORDS] + list(_SUBWORDS)
    tokens += pieces
    types += [normal] * len(pieces)
    if len(set(tokens)) != len(tokens):
        # llama.cpp aborts the whole process on a duplicate token string.
        raise ValueError("duplicate token in the generated vocabulary")
    # Longer pieces get higher scores so the tokenizer prefers whole words.
    scores = [0.0] * (3 + 256) + [float(len(p)) - i * 1e-4 for i, p in enumerate(pieces)]
    return tokens, scores, types


def write_tiny_llama(path: Path, spec: TinyLlamaSpec = TinyLlamaSpec()) -> Path:
    """Writes a random-weight F32 llama GGUF to `path` (atomically)."""
    import gguf
    import numpy as np

    tokens, scores, types = build_vocab()
    n_vocab = len(tokens)
    head_dim = spec.n_embd // spec.n_head
    rng = np.random.default_rng(spec.seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name(f"edgebench-tiny-llama-{spec.cache_key()}")
    writer.add_context_length(spec.n_ctx)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer)
    writer.add_feed_forward_length(spec.n_ff)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_tensor("token_embd.weight", weight(n_vocab, spec.n_embd))
    for i in range(spec.n_layer):
        kv_width = spec.n_head_kv * head_dim
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones(spec.n_embd))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(spec.n_embd, spec.n_embd))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(kv_width, spec.n_embd))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(kv_width, spec.n_embd))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(spec.n_embd, spec.n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones(spec.n_embd))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(spec.n_ff, spec.n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(spec.n_ff, spec.n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(spec.n_embd, spec.n_ff))
    writer.add_tensor("output_norm.weight", ones(spec.n_embd))
    writer.add_tensor("output.weight", weight(n_vocab, spec.n_embd))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)
    return path


def cached_tiny_llama(folder: Path, spec: TinyLlamaSpec = TinyLlamaSpec()) -> Path:
    """The generated model for `spec` in `folder`, written on first use."""
    path = folder / f"tiny-llama-{spec.cache_key()}-f32.gguf"
    return path if path.exists() else write_tiny_llama(path, spec)
