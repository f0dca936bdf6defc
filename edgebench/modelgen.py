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
        text = repr(sorted(asdict(self).items())) + "|vocab-v2"
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
    # Pad to a multiple of 64 rows: llama.cpp's CPU kernels for quantized weights
    # crash on an output matrix with an odd row count (449 rows did, 512 do not).
    filler = [f"▁x{i}" for i in range(-(len(tokens) + len(pieces)) % 64)]
    pieces += filler
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


@dataclass(frozen=True)
class TinyHfSpec:
    """A small transformers Llama (GQA) with a byte-level BPE tokenizer trained offline."""

    vocab_size: int = 512
    hidden_size: int = 128
    intermediate_size: int = 344
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 2048
    seed: int = 1234

    def cache_key(self) -> str:
        text = repr(sorted(asdict(self).items())) + "|hf-v1"
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _train_tokenizer(vocab_size: int) -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    from edgebench.agent.workload import CORPUS

    tokenizer.train_from_iterator([CORPUS, " ".join(_WORDS)] * 4, trainer=trainer)
    return tokenizer


def write_tiny_hf(folder: Path, spec: TinyHfSpec = TinyHfSpec()) -> Path:
    """Writes a random-weight transformers model with its tokenizer to `folder`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(spec.seed)
    raw = _train_tokenizer(spec.vocab_size)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    tmp = folder.with_name(folder.name + f".{os.getpid()}.tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, folder)
    return folder


def cached_tiny_hf(root: Path, spec: TinyHfSpec = TinyHfSpec()) -> Path:
    folder = root / f"tiny-hf-{spec.cache_key()}"
    return folder if folder.is_dir() else write_tiny_hf(folder, spec)


def cached_tiny_onnx(root: Path, spec: TinyHfSpec = TinyHfSpec(), precision: str = "fp32") -> Path:
    """The tiny transformers model turned into an onnxruntime-genai decoder (KV cache)."""
    import subprocess
    import sys

    folder = root / f"tiny-onnx-{spec.cache_key()}-{precision}"
    if folder.is_dir():
        return folder
    hf = cached_tiny_hf(root, spec)
    tmp = folder.with_name(folder.name + f".{os.getpid()}.tmp")
    subprocess.run(
        [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(tmp),
         "-p", precision, "-e", "cpu", "-c", str(root / ".builder-cache")],
        check=True, capture_output=True,
    )  # fmt: skip
    os.replace(tmp, folder)
    return folder


def cached_tiny_onnx_export(root: Path, spec: TinyHfSpec = TinyHfSpec()) -> Path:
    """The same decoder laid out as a plain ONNX export (Optimum's layout): model.onnx with
    its KV cache as inputs and outputs, the transformers config.json and tokenizer.json,
    and no genai_config.json, so our own greedy loop runs it, not onnxruntime-genai."""
    import shutil

    folder = root / f"tiny-onnx-export-{spec.cache_key()}"
    if folder.is_dir():
        return folder
    genai, hf = cached_tiny_onnx(root, spec), cached_tiny_hf(root, spec)
    tmp = folder.with_name(folder.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("model.onnx", "model.onnx.data", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(genai / name, tmp / name)
    shutil.copy2(hf / "config.json", tmp / "config.json")
    os.replace(tmp, folder)
    return folder
