"""GPU memory planning for vLLM: weights per GPU, KV-cache bytes per token, tokens and sequences that fit.

Works without a GPU. A model is described by the few numbers of its config.json that decide memory (layers,
KV heads, head dimension, dtype, parameter count); an instance type by the committed price table
(helpers/data/ec2_prices.csv: how many GPUs, which GPU). The arithmetic follows vLLM's own accounting:

    budget per GPU   = gpu_memory_utilization x GPU memory the driver reports
    weights per GPU  = parameters x dtype bytes / tensor-parallel size
    KV cache per GPU = budget - weights - overhead            (what vLLM calls "Available KV cache memory")
    KV bytes/token   = 2 (K and V) x layers x KV heads on this GPU x head dim x dtype bytes
    tokens           = whole 16-token blocks of KV cache      ("GPU KV cache size: N tokens" in vLLM's log)

The overhead is an assumption, stated and adjustable: 1.5 GiB per GPU for the activations of the largest
batch vLLM profiles, CUDA graphs, and the buffers of NCCL and cuBLAS. vLLM measures it at start-up;
`parse_vllm_kv_log` reads what it found, so a plan can be checked against a real server.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from helpers.infra.aws import InstanceType, load_instance_types

GIB = 2**30
MIB = 2**20
BLOCK_SIZE = 16  # vLLM's default KV-cache block (page) size, in tokens
OVERHEAD_GIB = 1.5  # per GPU: activations, CUDA graphs, NCCL/cuBLAS buffers (assumption; vLLM measures it)
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "fp8": 1, "int8": 1}

# Memory each GPU reports to CUDA (nvidia-smi "MiB" total): a little under the nominal 24 GB of the price table.
DRIVER_VISIBLE_MIB = {"a10g": 23028, "l4": 23034}
# Peak memory bandwidth in GB/s (NVIDIA data sheets): the ceiling of single-sequence decode speed.
GPU_BANDWIDTH_GB_S = {"a10g": 600, "l4": 300}


def transformer_parameters(
    layers: int,
    hidden_size: int,
    attention_heads: int,
    kv_heads: int,
    head_dim: int,
    intermediate_size: int,
    vocab_size: int,
    tied_embeddings: bool = False,
    qkv_bias: bool = False,
    qk_norm: bool = False,
) -> int:
    """Parameters of a dense decoder (Llama/Qwen shape: GQA attention, SwiGLU MLP, RMSNorm), from its config."""
    q, kv = attention_heads * head_dim, kv_heads * head_dim
    attention = hidden_size * q + 2 * hidden_size * kv + q * hidden_size
    if qkv_bias:
        attention += q + 2 * kv
    if qk_norm:
        attention += 2 * head_dim
    mlp = 3 * hidden_size * intermediate_size  # gate, up and down projections
    per_layer = attention + mlp + 2 * hidden_size  # two RMSNorms
    embeddings = vocab_size * hidden_size * (1 if tied_embeddings else 2)  # input embedding and LM head
    return layers * per_layer + embeddings + hidden_size  # + the final norm


@dataclass(frozen=True)
class ModelConfig:
    """The numbers of a model's config.json that decide its GPU memory."""

    name: str
    layers: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    parameters: int
    dtype: str
    max_position_embeddings: int
    source: str
    notes: str = ""

    @property
    def dtype_bytes(self) -> int:
        """Bytes per weight and per KV-cache element."""
        return DTYPE_BYTES[self.dtype]

    @property
    def weight_bytes(self) -> int:
        """Bytes of all weights."""
        return self.parameters * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token costs on the whole model (all GPUs together)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    def kv_heads_per_gpu(self, tensor_parallel: int) -> int:
        """KV heads each GPU holds: split when they divide evenly, else replicated (at least one per GPU)."""
        return max(1, math.ceil(self.kv_heads / tensor_parallel))

    def kv_bytes_per_token_per_gpu(self, tensor_parallel: int) -> int:
        """KV-cache bytes one token costs on each GPU under tensor parallelism."""
        return 2 * self.layers * self.kv_heads_per_gpu(tensor_parallel) * self.head_dim * self.dtype_bytes


# Qwen/Qwen3-14B config.json (https://huggingface.co/Qwen/Qwen3-14B/blob/main/config.json): num_hidden_layers 40,
# num_attention_heads 40, num_key_value_heads 8, head_dim 128, hidden_size 5120, intermediate_size 17408,
# vocab_size 151936, tie_word_embeddings false, torch_dtype bfloat16, max_position_embeddings 40960; Qwen3
# normalises q and k per head (q_norm, k_norm) and has no attention bias. The model card says 14.8B parameters.
QWEN3_14B = ModelConfig(
    name="Qwen/Qwen3-14B",
    layers=40,
    attention_heads=40,
    kv_heads=8,
    head_dim=128,
    parameters=transformer_parameters(40, 5120, 40, 8, 128, 17408, 151936, qk_norm=True),  # 14,768,307,200
    dtype="bfloat16",
    max_position_embeddings=40960,
    source="https://huggingface.co/Qwen/Qwen3-14B/blob/main/config.json",
)

# Qwen/Qwen2.5-VL-7B-Instruct config.json (https://huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct/blob/main/config.json):
# language model num_hidden_layers 28, num_attention_heads 28, num_key_value_heads 4, hidden_size 3584 (head_dim
# 3584/28 = 128), intermediate_size 18944, vocab_size 152064, untied, q/k/v bias, torch_dtype bfloat16,
# max_position_embeddings 128000; plus a vision encoder (vision_config: 32 blocks of width 1280, SwiGLU 3420,
# patch merger to 3584) of 676,550,144 parameters. Total 8,292,166,656 (the model page: 8.29B).
QWEN25_VL_7B_VISION_ENCODER = 676_550_144
QWEN25_VL_7B = ModelConfig(
    name="Qwen/Qwen2.5-VL-7B-Instruct",
    layers=28,
    attention_heads=28,
    kv_heads=4,
    head_dim=128,
    parameters=transformer_parameters(28, 3584, 28, 4, 128, 18944, 152064, qkv_bias=True)
    + QWEN25_VL_7B_VISION_ENCODER,
    dtype="bfloat16",
    max_position_embeddings=128000,
    source="https://huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct/blob/main/config.json",
    notes="vision encoder weights included; only the language model has a KV cache",
)

MODELS: dict[str, ModelConfig] = {m.name: m for m in (QWEN3_14B, QWEN25_VL_7B)}


def get_model(name: str) -> ModelConfig:
    """A shipped model config by its Hugging Face id, or a clear error listing the known ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(
            f"No config shipped for {name!r}. Known: {', '.join(MODELS)}. For another model, build a "
            "ModelConfig from the numbers in its config.json."
        ) from None


@dataclass(frozen=True)
class GpuNode:
    """An instance type as the planner sees it: how many GPUs, how much memory each, how fast, what it costs."""

    instance_type: str
    gpu_name: str
    gpus: int
    nominal_gib: float
    visible_bytes: int
    bandwidth_gb_s: float | None
    price_usd_per_hour: float


def gpu_node(instance_type: str, table: dict[str, InstanceType] | None = None) -> GpuNode:
    """The GPU facts of an instance type from the committed price table."""
    table = table or load_instance_types()
    if instance_type not in table:
        gpu_types = sorted(t for t, row in table.items() if row.gpu_count)
        raise ValueError(f"{instance_type!r} is not in the price table. GPU instance types: {', '.join(gpu_types)}")
    row = table[instance_type]
    if not row.gpu_count:
        raise ValueError(f"{instance_type} has no GPU; pick a g5 or g6 instance type.")
    name = row.gpu_name.lower()
    visible = DRIVER_VISIBLE_MIB.get(name)
    return GpuNode(
        instance_type=instance_type,
        gpu_name=row.gpu_name.upper(),
        gpus=row.gpu_count,
        nominal_gib=row.gpu_memory_gib,
        # unknown GPU: nominal GB (10^9) as GiB, less 2% the driver keeps (the ratio seen on A10G and L4)
        visible_bytes=visible * MIB if visible else int(row.gpu_memory_gib * 1e9 * 0.98),
        bandwidth_gb_s=GPU_BANDWIDTH_GB_S.get(name),
        price_usd_per_hour=float(row.price_usd_per_hour),
    )


@dataclass(frozen=True)
class Plan:
    """How one model fits on one instance type at one tensor-parallel size and memory utilisation (per GPU)."""

    model: ModelConfig
    node: GpuNode
    tensor_parallel: int
    gpu_memory_utilization: float
    max_model_len: int
    overhead_bytes: int
    block_size: int = BLOCK_SIZE
    label: str = field(default="")

    @property
    def budget_bytes(self) -> float:
        """What vLLM may use on each GPU."""
        return self.gpu_memory_utilization * self.node.visible_bytes

    @property
    def weight_bytes_per_gpu(self) -> float:
        """Each GPU's share of the weights."""
        return self.model.weight_bytes / self.tensor_parallel

    @property
    def kv_bytes_per_token_per_gpu(self) -> int:
        """KV-cache bytes one token costs on each GPU."""
        return self.model.kv_bytes_per_token_per_gpu(self.tensor_parallel)

    @property
    def kv_cache_bytes_per_gpu(self) -> float:
        """What is left for the KV cache on each GPU (negative: the weights do not fit)."""
        return self.budget_bytes - self.weight_bytes_per_gpu - self.overhead_bytes

    @property
    def kv_blocks(self) -> int:
        """Whole KV-cache blocks per GPU (every GPU holds the same blocks, each for its share of the heads)."""
        block = self.block_size * self.kv_bytes_per_token_per_gpu
        return max(0, int(self.kv_cache_bytes_per_gpu // block))

    @property
    def kv_tokens(self) -> int:
        """Tokens of context the KV cache holds across all running sequences."""
        return self.kv_blocks * self.block_size

    def sequences(self, length: int) -> int:
        """How many sequences of this many tokens (prompt + answer) fit in the KV cache at once."""
        return self.kv_blocks // math.ceil(length / self.block_size)

    @property
    def max_concurrency(self) -> float:
        """KV-cache tokens / max_model_len: what vLLM logs as "Maximum concurrency for N tokens per request"."""
        return self.kv_tokens / self.max_model_len

    @property
    def fits(self) -> bool:
        """Whether at least one sequence of max_model_len fits (vLLM refuses to start otherwise)."""
        return self.sequences(self.max_model_len) >= 1

    @property
    def decode_tokens_per_s_bound(self) -> float | None:
        """Upper bound of one sequence's decode speed: each token reads every GPU's weights once, in parallel."""
        if not self.node.bandwidth_gb_s:
            return None
        return self.node.bandwidth_gb_s * 1e9 / self.weight_bytes_per_gpu

    def row(self, lengths: tuple[int, ...] = (4096, 32768)) -> dict[str, Any]:
        """The plan as one table row (GiB per GPU, tokens, sequences at each length)."""
        row: dict[str, Any] = {
            "model": self.model.name,
            "instance": f"{self.node.instance_type} ({self.node.gpus}x {self.node.gpu_name})",
            "TP": self.tensor_parallel,
            "util": self.gpu_memory_utilization,
            "GiB/GPU visible": round(self.node.visible_bytes / GIB, 2),
            "budget": round(self.budget_bytes / GIB, 2),
            "weights": round(self.weight_bytes_per_gpu / GIB, 2),
            "overhead": round(self.overhead_bytes / GIB, 2),
            "KV cache": round(self.kv_cache_bytes_per_gpu / GIB, 2),
            "KiB/token/GPU": round(self.kv_bytes_per_token_per_gpu / 1024, 1),
            "KV tokens": self.kv_tokens,
        }
        for length in lengths:
            row[f"seqs @ {length:,}"] = self.sequences(length) if length <= self.max_model_len else None
        row["fits"] = "yes" if self.fits else f"NO: not one {self.max_model_len:,}-token sequence"
        bound = self.decode_tokens_per_s_bound
        row["decode bound tok/s"] = round(bound) if bound else None
        row["$/h"] = self.node.price_usd_per_hour
        return row


def plan(
    model: ModelConfig | str,
    instance_type: str,
    tensor_parallel: int | None = None,
    gpu_memory_utilization: float = 0.90,
    max_model_len: int | None = None,
    overhead_gib: float = OVERHEAD_GIB,
    table: dict[str, InstanceType] | None = None,
) -> Plan:
    """Plan a model on an instance type (tensor_parallel defaults to all its GPUs); bad input gets a clear error."""
    config = get_model(model) if isinstance(model, str) else model
    node = gpu_node(instance_type, table)
    tp = tensor_parallel or node.gpus
    if tp < 1 or tp > node.gpus:
        raise ValueError(f"tensor_parallel must be between 1 and {node.gpus} (the GPUs of {instance_type}), not {tp}.")
    if config.attention_heads % tp:
        raise ValueError(
            f"{config.name} has {config.attention_heads} attention heads, which do not split evenly over {tp} GPUs; "
            f"vLLM refuses that. Use a tensor_parallel that divides {config.attention_heads}."
        )
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(
            f"gpu_memory_utilization is a share of each GPU, between 0 and 1, not {gpu_memory_utilization}."
        )
    length = max_model_len or config.max_position_embeddings
    if length > config.max_position_embeddings:
        raise ValueError(
            f"max_model_len {length} is beyond {config.name}'s {config.max_position_embeddings} positions."
        )
    return Plan(config, node, tp, gpu_memory_utilization, length, int(overhead_gib * GIB))


def server_plan(server: str, instance_type: str, overhead_gib: float = OVERHEAD_GIB, **overrides: Any) -> Plan:
    """The plan of one server of manifests/02-vllm (tensor parallel, utilisation, max length from its parameters)."""
    from helpers.infra.manifests import chapter_parameters

    servers = chapter_parameters("02-vllm")["servers"]
    if server not in servers:
        raise ValueError(f"No server {server!r} in manifests/02-vllm/parameters.yaml; known: {', '.join(servers)}")
    s = {**servers[server], **overrides}
    return plan(s["model"], instance_type, s["tensor_parallel"], s["gpu_memory_utilization"], s["max_model_len"],
                overhead_gib)


def plan_rows(plans: list[Plan], lengths: tuple[int, ...] = (4096, 32768)) -> list[dict[str, Any]]:
    """Table rows for several plans."""
    return [p.row(lengths) for p in plans]


def format_rows(rows: list[dict[str, Any]], digits: int = 2) -> list[dict[str, str]]:
    """Rows with every number written for reading: floats with `digits` decimals, integers with thousands
    separators, None as blank (a table of mixed columns would otherwise show 9.000000 and nan)."""

    def text(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return str(value)
        return f"{value:,}" if isinstance(value, int) else f"{value:,.{digits}f}"

    return [{key: text(value) for key, value in row.items()} for row in rows]


def plot_plans(plans: list[Plan], lengths: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384, 32768)) -> Any:
    """Two panels: where each GPU's memory goes, and how many sequences fit as they get longer."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1.1, 1]})
    names = [p.label or f"{p.model.name.split('/')[-1]}\n{p.node.instance_type} TP{p.tensor_parallel}" for p in plans]
    parts = [
        ("weights", [p.weight_bytes_per_gpu for p in plans], "#4c72b0"),
        ("overhead (assumed)", [p.overhead_bytes for p in plans], "#999999"),
        ("KV cache", [max(0.0, p.kv_cache_bytes_per_gpu) for p in plans], "#55a868"),
        ("kept free (1 - util)", [p.node.visible_bytes - p.budget_bytes for p in plans], "#dddddd"),
    ]
    bottom = [0.0] * len(plans)
    for label, values, colour in parts:
        gib = [v / GIB for v in values]
        left.barh(names, gib, left=bottom, color=colour, label=label)
        bottom = [b + g for b, g in zip(bottom, gib)]
    left.set_xlabel("GiB per GPU")
    left.set_title("Where each GPU's memory goes")
    left.invert_yaxis()
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4, fontsize=8, frameon=False)
    for p, name in zip(plans, names):
        usable = [n for n in lengths if n <= p.max_model_len]  # longer requests are refused by --max-model-len
        right.plot(usable, [max(p.sequences(n), 0.5) for n in usable], marker="o", label=name.replace("\n", " "))
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.set_xticks(lengths, [f"{n // 1024}k" for n in lengths])
    right.set_xlabel("tokens per sequence (prompt + answer)")
    right.set_ylabel("sequences that fit at once")
    right.set_title("Concurrent sequences the KV cache holds")
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- what vLLM reports


@dataclass(frozen=True)
class KvCacheReport:
    """The KV-cache figures a vLLM server logs at start-up (None where the log does not say)."""

    tokens: int | None
    max_concurrency: float | None
    max_model_len: int | None
    available_gib: float | None
    gpu_blocks: int | None


_NUMBER = r"([\d,]+)"


def parse_vllm_kv_log(text: str, block_size: int = BLOCK_SIZE) -> KvCacheReport:
    """Read the KV-cache size from a vLLM log: "GPU KV cache size: N tokens" (V1), or "# GPU blocks: N" (V0)."""
    tokens = re.search(r"GPU KV cache size: " + _NUMBER + " tokens", text)
    concurrency = re.search(r"Maximum concurrency for " + _NUMBER + r" tokens per request: ([\d.]+)x", text)
    available = re.search(r"Available KV cache memory: ([\d.]+) GiB", text)
    blocks = re.search(r"# (?:GPU|CUDA|cuda|gpu) blocks: " + _NUMBER, text)
    gpu_blocks = int(blocks.group(1).replace(",", "")) if blocks else None
    if tokens:
        token_count: int | None = int(tokens.group(1).replace(",", ""))
    elif gpu_blocks is not None:
        token_count = gpu_blocks * block_size
    else:
        token_count = None
    if token_count is None and available is None:
        raise ValueError(
            "No KV-cache size in this log. vLLM prints it once the model is loaded (\"GPU KV cache size: N tokens\"); "
            "wait for the pod to be Ready, then read the first lines of its log again."
        )
    return KvCacheReport(
        tokens=token_count,
        max_concurrency=float(concurrency.group(2)) if concurrency else None,
        max_model_len=int(concurrency.group(1).replace(",", "")) if concurrency else None,
        available_gib=float(available.group(1)) if available else None,
        gpu_blocks=gpu_blocks,
    )


def compare_with_log(planned: Plan, report: KvCacheReport) -> list[dict[str, Any]]:
    """Planned and reported KV cache side by side, with their ratio (and the overhead the log implies)."""

    def ratio(reported: float | None, plan_value: float) -> float | None:
        return round(reported / plan_value, 3) if reported is not None and plan_value else None

    rows: list[dict[str, Any]] = []
    if report.available_gib is not None:
        planned_gib = planned.kv_cache_bytes_per_gpu / GIB
        rows.append({"figure": "KV cache memory per GPU (GiB)", "planned": round(planned_gib, 2),
                     "vLLM reported": report.available_gib,
                     "reported / planned": ratio(report.available_gib, planned_gib)})
        implied = (planned.budget_bytes - planned.weight_bytes_per_gpu) / GIB - report.available_gib
        rows.append({"figure": "overhead per GPU (GiB): assumed vs implied by the log",
                     "planned": round(planned.overhead_bytes / GIB, 2), "vLLM reported": round(implied, 2),
                     "reported / planned": ratio(implied, planned.overhead_bytes / GIB)})
    if report.tokens is not None:
        rows.append({"figure": "KV cache tokens", "planned": planned.kv_tokens, "vLLM reported": report.tokens,
                     "reported / planned": ratio(report.tokens, planned.kv_tokens)})
    if report.max_concurrency is not None:
        length = report.max_model_len or planned.max_model_len
        planned_concurrency = planned.kv_tokens / length
        rows.append({"figure": f"concurrency at {length:,} tokens per request",
                     "planned": round(planned_concurrency, 2), "vLLM reported": report.max_concurrency,
                     "reported / planned": ratio(report.max_concurrency, planned_concurrency)})
    return rows
