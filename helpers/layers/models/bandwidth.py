"""The memory-bandwidth bound of token generation: how fast can a model decode on this machine, at most?

Generating one token multiplies the hidden state by (almost) every weight matrix of the model, so every
token reads all the weights from memory once. With the weights much larger than the CPU caches, decode speed
is capped by

    tokens/s  <=  memory bandwidth (bytes/s)  /  bytes of weights read per token

This module measures the bandwidth in-process with numpy (large array copies, one per thread, as many threads
as llama.cpp uses), reads the bytes per token from the GGUF file's tensor table, and measures the decode rate
of a running OpenAI-compatible server, so the three can be put side by side honestly. Two more measurements say
why a rate is what it is: who had the CPUs during it (CpuMeter: the measured processes, everyone else, the load
average), and whether more threads decode faster (measure_thread_scaling: arithmetic-bound if so, memory-bound
if not).
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
    worst_bytes_per_s: float = 0.0  # the slowest run: best and worst show how much one run can say

    @property
    def worst_gb_s(self) -> float:
        """The slowest run, in GB/s."""
        return self.worst_bytes_per_s / 1e9

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
    return Bandwidth(max(rates), statistics.median(rates), threads, size_mib, repeats, min(rates))


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


# ---------------------------------------------------------------- who had the CPUs during a measurement


@dataclass(frozen=True)
class CpuUse:
    """CPU time during a measurement: the measured processes', everyone else's, and the load average at its end."""

    wall_s: float
    cpus: int
    measured_cpu_s: float  # CPU seconds of the processes being measured (threads included)
    busy_cpu_s: float  # CPU seconds all CPUs were busy (every process, and time the hypervisor took: steal)
    load_average: float  # 1-minute load average: processes running or waiting for a CPU, averaged

    @property
    def measured_cpus(self) -> float:
        """How many CPUs the measured processes used, on average."""
        return self.measured_cpu_s / self.wall_s if self.wall_s else 0.0

    @property
    def other_cpus(self) -> float:
        """How many CPUs everything else used, on average (never below 0: counters tick at different moments)."""
        return max(0.0, self.busy_cpu_s - self.measured_cpu_s) / self.wall_s if self.wall_s else 0.0

    def busy(self, threshold: float = 0.25) -> bool:
        """Whether other processes took a noticeable share of the CPUs (more than `threshold` of one CPU)."""
        return self.other_cpus > threshold

    def describe(self, measured: str = "the measured process(es)") -> str:
        """One line: who used the CPUs, and what that means for the measurement."""
        line = (f"{self.measured_cpus:.2f} of {self.cpus} CPUs used by {measured}, "
                f"{self.other_cpus:.2f} by other processes; load average (1 min) {self.load_average:.2f}")
        if self.busy():
            return line + (": the machine was busy, so this rate is lower than the same code reaches on a quiet "
                           "machine")
        return line + ": the cores were free for the measurement"


class CpuMeter:
    """`with CpuMeter(processes) as meter:` ... `meter.use` is the CpuUse of the block (psutil: /proc on Linux)."""

    def __init__(self, processes: list[Any]) -> None:
        self.processes = processes
        self.use: CpuUse | None = None

    @staticmethod
    def _busy() -> float:
        import psutil

        t = psutil.cpu_times()
        return sum(getattr(t, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))

    def _measured(self) -> float:
        return sum(p.cpu_times().user + p.cpu_times().system for p in self.processes)

    def __enter__(self) -> CpuMeter:
        self._start = (time.perf_counter(), self._busy(), self._measured())
        return self

    def __exit__(self, *_exc: Any) -> None:
        import os

        start, busy, measured = self._start
        self.use = CpuUse(time.perf_counter() - start, os.cpu_count() or 1, self._measured() - measured,
                          self._busy() - busy, os.getloadavg()[0])


# ---------------------------------------------------------------- what limits decoding: more threads, faster?


@dataclass(frozen=True)
class ThreadRate:
    """The decode rate of llama.cpp in this process with a given number of threads (one measured answer)."""

    threads: int
    tokens: int
    decode_tokens_per_s: float


def measure_thread_scaling(model_path: Path | str, threads: tuple[int, ...] = (1, 2), tokens: int = 24,
                           rounds: int = 2, prompt: str = "Explain how a Kubernetes scheduler places a pod.",
                           ) -> list[ThreadRate]:
    """Decode `tokens` tokens with llama.cpp in this process, once per thread count per round (alternating, so a
    change in the machine's load hits every count alike); prefill left out, as in measure_decode_rate.

    If doubling the threads nearly doubles the rate, the cores' arithmetic sets the pace; if the rate stays put,
    memory does (more threads cannot read the weights faster than memory delivers them)."""
    from llama_cpp import Llama

    engines = {n: Llama(model_path=str(model_path), n_ctx=256, n_threads=n, n_threads_batch=max(threads),
                        verbose=False) for n in threads}
    try:
        prompt_tokens = engines[threads[0]].tokenize(prompt.encode())
        rates = []
        for _ in range(rounds):
            for n, llm in engines.items():
                generated = llm.generate(prompt_tokens, temp=0.0)
                next(generated)  # the first token comes after the prompt's prefill: the clock starts here
                start = time.perf_counter()
                count = 0
                for _token in generated:
                    count += 1
                    if count == tokens - 1:
                        break
                elapsed = time.perf_counter() - start
                if count < 1:
                    raise RuntimeError("The model stopped after one token; use a prompt that asks for more.")
                rates.append(ThreadRate(n, count + 1, count / elapsed))
        return rates
    finally:
        for llm in engines.values():
            llm.close()


def decode_limit(rates: dict[int, float], memory: dict[int, Bandwidth], bytes_per_token: int) -> str:
    """What limits decoding, read from the measurements: decode rates per thread count (tokens/s) and the memory
    bandwidth numpy got with the same thread counts.

    One thread that reads its weights far slower than one thread can copy memory is not waiting for memory: its
    arithmetic sets the pace. The speed-up from more threads says how much more cores help."""
    fewest, most = min(rates), max(rates)
    share = {n: rates[n] * bytes_per_token / memory[n].best_bytes_per_s for n in rates}
    if share[fewest] >= 0.8:
        verdict = (f"memory bandwidth: {fewest} thread(s) already read the weights at {share[fewest]:.0%} of what "
                   "memory delivers to numpy, so more threads cannot help much")
    elif share[fewest] < 0.5:
        verdict = (f"arithmetic: {fewest} thread(s) read the weights at only {share[fewest]:.0%} of the bandwidth "
                   f"{fewest} thread(s) got from numpy, so the thread is not waiting for memory: unpacking and "
                   "multiplying the weights is what takes the time")
    else:
        verdict = (f"both: {fewest} thread(s) read the weights at {share[fewest]:.0%} of the bandwidth numpy got, "
                   "between the two regimes")
    if most == fewest:
        return verdict
    speedup = rates[most] / rates[fewest]
    gain = (speedup - 1) / (most / fewest - 1)
    how = ("the extra cores add most of their arithmetic" if gain >= 0.6 else
           "the extra cores add part of their arithmetic; the rest is lost to the threads waiting for each other "
           "after every layer, or to other processes (the CPU line)" if gain >= 0.2 else
           "the extra cores barely help: the threads wait for each other, for memory, or for other processes")
    return (f"{verdict}. {most} threads decode {speedup:.2f}x as fast as {fewest} ({most / fewest:.0f}x would be "
            f"perfect scaling): {how}; with {most} threads the weights are read at {share[most]:.0%} of the "
            "bandwidth numpy got")
