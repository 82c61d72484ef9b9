"""The memory-bandwidth bound of token generation: how fast can a model decode on this machine, at most?

Generating one token multiplies the hidden state by (almost) every weight matrix of the model, so every
token reads all the weights from memory once. With the weights much larger than the CPU caches, decode speed
is capped by

    tokens/s  <=  memory bandwidth (bytes/s)  /  bytes of weights read per token

This module measures the bandwidth in-process with numpy (large array copies, one per thread, as many threads
as llama.cpp uses), reads the bytes per token from the GGUF file's tensor table, and measures the decode rate
of a running OpenAI-compatible server, so the three can be put side by side honestly.
"""

from __future__ import annotations

import mmap
import statistics
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GGUF_MAGIC = b"GGUF"
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUF value types -> bytes
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class Bandwidth:
    """Measured memory bandwidth (bytes moved per second: each copied byte is read once and written once)."""

    best_bytes_per_s: float
    median_bytes_per_s: float
    threads: int
    size_mib: int
    repeats: int

    @property
    def best_gb_s(self) -> float:
        """The best run, in GB/s (10^9 bytes)."""
        return self.best_bytes_per_s / 1e9

    @property
    def median_gb_s(self) -> float:
        """The median run, in GB/s."""
        return self.median_bytes_per_s / 1e9


def measure_memory_bandwidth(size_mib: int = 512, threads: int = 1, repeats: int = 7) -> Bandwidth:
    """Copy a large array (split over `threads` threads; numpy releases the GIL while copying) and time it.

    The array is far larger than any CPU cache, so the copy streams through main memory. Each run moves
    2 x size bytes (read the source, write the destination). The best run is the least disturbed by other
    processes: it is the honest ceiling; the median shows what a busy machine gives.
    """
    import numpy as np

    if size_mib < 64 or threads < 1 or repeats < 1:
        raise ValueError("Use size_mib >= 64 (far beyond the caches), threads >= 1 and repeats >= 1.")
    n = size_mib * 2**20 // 8
    src = np.ones(n, dtype=np.float64)  # np.ones touches every page, so no page faults are timed
    dst = np.zeros(n, dtype=np.float64)
    dst[:] = src  # warm up: the first copy maps the destination's pages
    bounds = np.linspace(0, n, threads + 1, dtype=np.int64)
    chunks = [(dst[a:b], src[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    rates = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(lambda pair: np.copyto(pair[0], pair[1]), chunks))
            rates.append(2 * src.nbytes / (time.perf_counter() - start))
    return Bandwidth(max(rates), statistics.median(rates), threads, size_mib, repeats)


# ---------------------------------------------------------------- the bytes a GGUF model reads per token


def _skip_value(buf: Any, pos: int, value_type: int) -> int:
    if value_type in _SCALAR_SIZES:
        return pos + _SCALAR_SIZES[value_type]
    if value_type == _STRING:
        (length,) = struct.unpack_from("<Q", buf, pos)
        return pos + 8 + length
    if value_type == _ARRAY:
        item_type, count = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if item_type in _SCALAR_SIZES:
            return pos + count * _SCALAR_SIZES[item_type]
        for _ in range(count):
            pos = _skip_value(buf, pos, item_type)
        return pos
    raise ValueError(f"unknown GGUF value type {value_type}")


def _read_string(buf: Any, pos: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<Q", buf, pos)
    return bytes(buf[pos + 8 : pos + 8 + length]).decode("utf-8"), pos + 8 + length


@dataclass(frozen=True)
class GgufTensor:
    """One tensor of a GGUF file: its name, shape and size on disk."""

    name: str
    shape: tuple[int, ...]
    type_name: str
    n_bytes: int


def gguf_tensors(path: Path | str) -> list[GgufTensor]:
    """The tensor table of a GGUF file (names, shapes, quantisation types, bytes), read from its header only."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != GGUF_MAGIC:
            raise ValueError(f"{path} is not a GGUF file (no GGUF magic at its start).")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
        if version < 2:
            raise ValueError(f"{path} is GGUF version {version}; only version 2 and later are supported.")
        pos = 24
        for _ in range(n_kv):  # metadata: skipped (the tokenizer alone is ~300k strings)
            _key, pos = _read_string(buf, pos)
            (value_type,) = struct.unpack_from("<I", buf, pos)
            pos = _skip_value(buf, pos + 4, value_type)
        tensors = []
        for _ in range(n_tensors):
            name, pos = _read_string(buf, pos)
            (n_dims,) = struct.unpack_from("<I", buf, pos)
            shape = struct.unpack_from(f"<{n_dims}Q", buf, pos + 4)
            type_id, _offset = struct.unpack_from("<IQ", buf, pos + 4 + 8 * n_dims)
            pos += 4 + 8 * n_dims + 12
            qtype = GGMLQuantizationType(type_id)
            block, type_size = GGML_QUANT_SIZES[qtype]
            elements = 1
            for dim in shape:
                elements *= dim
            tensors.append(GgufTensor(name, tuple(shape), qtype.name, elements // block * type_size))
    return tensors


@dataclass(frozen=True)
class WeightsPerToken:
    """Bytes of weights one generated token reads, and how that figure was made."""

    bytes_per_token: int
    tensor_bytes: int
    file_bytes: int
    embedding_bytes: int
    tied_output: bool

    def explain(self) -> str:
        """One sentence on what was counted."""
        if self.tied_output:
            return ("all tensors: the token-embedding table doubles as the output matrix, "
                    "so every token reads it in full")
        return ("all tensors except the token-embedding table, of which a token reads only its own row "
                "(the output matrix is a separate tensor, read in full)")


def weights_read_per_token(path: Path | str) -> WeightsPerToken:
    """Bytes one decode step reads: the GGUF's tensors, less the embedding rows a token does not look up."""
    tensors = gguf_tensors(path)
    total = sum(t.n_bytes for t in tensors)
    by_name = {t.name: t for t in tensors}
    embedding = by_name.get("token_embd.weight")
    tied = "output.weight" not in by_name
    per_token = total
    if embedding is not None and not tied:
        rows = embedding.shape[-1]  # GGUF shapes list the fastest-varying dimension first: (hidden, vocab)
        per_token = total - embedding.n_bytes + embedding.n_bytes // rows
    return WeightsPerToken(per_token, total, Path(path).stat().st_size,
                           embedding.n_bytes if embedding else 0, tied)


def decode_bound_tokens_per_s(bytes_per_token: int, bandwidth_bytes_per_s: float) -> float:
    """The most tokens per second a memory-bound decoder can generate: bandwidth / bytes read per token."""
    return bandwidth_bytes_per_s / bytes_per_token


# ---------------------------------------------------------------- the decode rate of a running server


@dataclass(frozen=True)
class DecodeRate:
    """Timing of one streamed completion: time to first token and the decode rate after it."""

    time_to_first_token_s: float
    tokens: int
    decode_tokens_per_s: float
    total_s: float


def measure_decode_rate(client: Any, model: str, messages: list[dict[str, str]], max_tokens: int = 64) -> DecodeRate:
    """Stream one completion; decode rate = tokens after the first / time from first to last (prefill excluded).

    llama.cpp's server sends one chunk per generated token, so chunks with text count the tokens.
    """
    start = time.perf_counter()
    first = last = None
    tokens = 0
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0,
                                            stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            now = time.perf_counter()
            first = first or now
            last = now
            tokens += 1
    if first is None or last is None or tokens < 2:
        raise RuntimeError("The server streamed fewer than 2 tokens; ask for a longer answer (max_tokens).")
    return DecodeRate(first - start, tokens, (tokens - 1) / (last - first), last - start)
