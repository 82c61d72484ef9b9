"""The GPU memory planner against numbers worked out by hand, the vLLM log parser, and the bandwidth helpers."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from helpers.layers.models import bandwidth
from helpers.layers.vllm import planner
from helpers.config import Settings
from helpers.infra.manifests import chapter_parameters


def test_qwen3_14b_on_g6_12xlarge_by_hand() -> None:
    """Qwen3-14B, bf16, tensor parallel 4 on a g6.12xlarge (4x NVIDIA L4), utilisation 0.90, 1.5 GiB overhead.

    From config.json: 40 layers, 40 query heads, 8 KV heads, head_dim 128, hidden 5120, MLP 17408,
    vocab 151936, untied embeddings, q/k norms, no attention bias.

    Parameters per layer:
        attention  q 5120x5120 + k 5120x1024 + v 5120x1024 + o 5120x5120 = 62,914,560
                   + q_norm and k_norm 2 x 128                          =        256
        MLP        3 x 5120 x 17408                                      = 267,386,880
        two RMSNorms 2 x 5120                                            =     10,240
        one layer                                                        = 330,311,936
    40 layers = 13,212,477,440; embeddings + LM head 2 x 151936 x 5120 = 1,555,824,640; final norm 5,120
    total = 14,768,307,200 parameters (the model card: 14.8B)

    Per GPU (the L4 reports 23,034 MiB = 24,152,899,584 bytes):
        budget   0.90 x 24,152,899,584                  = 21,737,609,625.6 bytes
        weights  14,768,307,200 x 2 bytes / 4 GPUs      =  7,384,153,600 bytes  (6.88 GiB)
        overhead 1.5 GiB                                =  1,610,612,736 bytes
        KV cache 21,737,609,625.6 - 7,384,153,600 - 1,610,612,736 = 12,742,843,289.6 bytes (11.87 GiB)
    KV bytes per token: 2 x 40 layers x 8 KV heads x 128 x 2 bytes = 163,840 on the model,
        over 4 GPUs (2 KV heads each)                  = 40,960 bytes per GPU
    blocks of 16 tokens: 16 x 40,960 = 655,360 bytes; 12,742,843,289.6 / 655,360 = 19,444.04 -> 19,444 blocks
    tokens: 19,444 x 16 = 311,104
    sequences of 32,768 tokens (2,048 blocks each): 19,444 // 2,048 = 9;  of 4,096 tokens (256 blocks): 75
    vLLM's "maximum concurrency" at 32,768: 311,104 / 32,768 = 9.494
    """
    p = planner.plan("Qwen/Qwen3-14B", "g6.12xlarge", tensor_parallel=4, gpu_memory_utilization=0.90,
                     max_model_len=32768, overhead_gib=1.5)
    assert planner.QWEN3_14B.parameters == 14_768_307_200
    assert p.node.visible_bytes == 24_152_899_584 and p.node.gpus == 4 and p.node.gpu_name == "L4"
    assert p.budget_bytes == pytest.approx(21_737_609_625.6)
    assert p.weight_bytes_per_gpu == 7_384_153_600
    assert p.kv_cache_bytes_per_gpu == pytest.approx(12_742_843_289.6)
    assert planner.QWEN3_14B.kv_bytes_per_token == 163_840
    assert p.kv_bytes_per_token_per_gpu == 40_960
    assert p.kv_blocks == 19_444 and p.kv_tokens == 311_104
    assert p.sequences(32768) == 9 and p.sequences(4096) == 75
    assert p.max_concurrency == pytest.approx(9.494, abs=1e-3)
    assert p.fits


def test_qwen25_vl_parameters_from_its_config() -> None:
    """Language model: 28 x (attention 29,364,736 incl. q/k/v bias + MLP 3x3584x18944 + norms 7,168)
    + 2 x 152064 x 3584 + 3,584 = 7,615,616,512; with the 676,550,144-parameter vision encoder: 8,292,166,656."""
    lm = planner.transformer_parameters(28, 3584, 28, 4, 128, 18944, 152064, qkv_bias=True)
    assert lm == 7_615_616_512
    assert planner.QWEN25_VL_7B.parameters == 8_292_166_656
    assert planner.QWEN25_VL_7B.kv_bytes_per_token == 2 * 28 * 4 * 128 * 2


def test_kv_heads_are_replicated_when_tensor_parallel_exceeds_them() -> None:
    vl = planner.QWEN25_VL_7B  # 4 KV heads
    assert vl.kv_heads_per_gpu(1) == 4 and vl.kv_heads_per_gpu(4) == 1
    tiny = planner.ModelConfig("tiny", layers=2, attention_heads=8, kv_heads=2, head_dim=64, parameters=10**6,
                               dtype="bfloat16", max_position_embeddings=2048, source="test")
    assert tiny.kv_heads_per_gpu(4) == 1, "2 KV heads over 4 GPUs: each GPU keeps a copy of one"


def test_a_14b_model_does_not_fit_one_l4_and_the_plan_says_so() -> None:
    p = planner.plan("Qwen/Qwen3-14B", "g6.xlarge", max_model_len=32768)
    assert p.tensor_parallel == 1 and p.kv_cache_bytes_per_gpu < 0
    assert not p.fits and p.kv_tokens == 0 and p.row()["fits"].startswith("NO")


def test_g5_and_g6_differ_in_memory_by_six_mib_and_in_bandwidth_by_two() -> None:
    g5 = planner.plan("Qwen/Qwen3-14B", "g5.12xlarge", max_model_len=32768)
    g6 = planner.plan("Qwen/Qwen3-14B", "g6.12xlarge", max_model_len=32768)
    assert g6.node.visible_bytes - g5.node.visible_bytes == 6 * planner.MIB
    assert g5.decode_tokens_per_s_bound == pytest.approx(2 * g6.decode_tokens_per_s_bound)


def test_server_plans_read_the_manifest_parameters() -> None:
    servers = chapter_parameters("02-vllm")["servers"]
    reasoning = planner.server_plan("reasoning", "g6.12xlarge")
    assert reasoning.tensor_parallel == servers["reasoning"]["tensor_parallel"] == 4
    assert reasoning.max_model_len == servers["reasoning"]["max_model_len"]
    assert reasoning.gpu_memory_utilization == servers["reasoning"]["gpu_memory_utilization"]
    assert servers["reasoning"]["max_num_seqs"] <= reasoning.sequences(4096), "max-num-seqs within what fits at 4k"
    vision = planner.server_plan("vision", "g6.12xlarge")
    assert vision.fits and vision.tensor_parallel == 1
    assert servers["reasoning"]["served_model_name"] == Settings(_env_file=None).served_chat_model


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model": "Qwen/Qwen3-14B", "instance_type": "c7g.large"}, "has no GPU"),
        ({"model": "Qwen/Qwen3-14B", "instance_type": "p9.huge"}, "not in the price table"),
        ({"model": "Qwen/Qwen3-14B", "instance_type": "g6.12xlarge", "tensor_parallel": 3}, "do not split evenly"),
        ({"model": "Qwen/Qwen3-14B", "instance_type": "g6.12xlarge", "tensor_parallel": 8}, "between 1 and 4"),
        ({"model": "Qwen/Qwen3-14B", "instance_type": "g6.12xlarge", "gpu_memory_utilization": 90}, "between 0 and 1"),
        ({"model": "Qwen/Qwen3-14B", "instance_type": "g6.12xlarge", "max_model_len": 10**6}, "beyond"),
        ({"model": "meta/unknown", "instance_type": "g6.12xlarge"}, "No config shipped"),
    ],
)
def test_bad_input_gets_a_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        planner.plan(**kwargs)


V1_LOG = """\
(EngineCore_DP0 pid=311) INFO 11-27 09:12:01 [gpu_worker.py:298] Available KV cache memory: 11.52 GiB
(EngineCore_DP0 pid=311) INFO 11-27 09:12:02 [kv_cache_utils.py:1087] GPU KV cache size: 301,952 tokens
(EngineCore_DP0 pid=311) INFO 11-27 09:12:02 [kv_cache_utils.py:1091] \
Maximum concurrency for 32,768 tokens per request: 9.21x
"""


def test_parse_vllm_v1_log_and_compare() -> None:
    report = planner.parse_vllm_kv_log(V1_LOG)
    assert report == planner.KvCacheReport(301_952, 9.21, 32_768, 11.52, None)
    p = planner.plan("Qwen/Qwen3-14B", "g6.12xlarge", max_model_len=32768)
    rows = {r["figure"]: r for r in planner.compare_with_log(p, report)}
    assert rows["KV cache tokens"]["reported / planned"] == round(301_952 / 311_104, 3)
    implied = rows["overhead per GPU (GiB): assumed vs implied by the log"]
    assert implied["planned"] == 1.5 and implied["vLLM reported"] == pytest.approx(1.85, abs=0.01)


def test_parse_vllm_v0_log_counts_blocks() -> None:
    line = "INFO 05-01 12:00:00 executor_base.py:110] # GPU blocks: 19423, # CPU blocks: 2048"
    report = planner.parse_vllm_kv_log(line)
    assert report.gpu_blocks == 19_423 and report.tokens == 19_423 * 16 and report.max_concurrency is None


def test_parse_a_log_without_the_figures_says_what_to_do() -> None:
    with pytest.raises(ValueError, match="wait for the pod to be Ready"):
        planner.parse_vllm_kv_log("INFO Loading weights took 40 s")


def test_plot_has_two_panels() -> None:
    plans = [planner.server_plan("reasoning", "g6.12xlarge"), planner.server_plan("vision", "g6.12xlarge")]
    fig = planner.plot_plans(plans)
    assert len(fig.axes) == 2


# ---------------------------------------------------------------- the bandwidth bound (local)


def _tiny_gguf(path: Path, tied: bool) -> None:
    """A GGUF v3 file with one string key, one string-array key and F32/F16 tensors (header only matters)."""

    def string(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    tensors = [("token_embd.weight", (8, 100), 0), ("blk.0.ffn_up.weight", (8, 16), 1)]  # F32 and F16
    if not tied:
        tensors.append(("output.weight", (8, 100), 1))
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 2)
    out += string("general.name") + struct.pack("<I", 8) + string("tiny")
    out += string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 3) + string("a") + string("bb") + string("c")
    for name, shape, type_id in tensors:
        out += string(name) + struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}Q", *shape)
        out += struct.pack("<IQ", type_id, 0)
    path.write_bytes(out + b"\0" * 64)


@pytest.mark.parametrize("tied", [True, False])
def test_weights_read_per_token_from_a_gguf_header(tmp_path: Path, tied: bool) -> None:
    path = tmp_path / "tiny.gguf"
    _tiny_gguf(path, tied)
    sizes = {t.name: t.n_bytes for t in bandwidth.gguf_tensors(path)}
    assert sizes["token_embd.weight"] == 8 * 100 * 4 and sizes["blk.0.ffn_up.weight"] == 8 * 16 * 2
    weights = bandwidth.weights_read_per_token(path)
    if tied:  # the embedding table is also the output matrix: read in full
        assert weights.bytes_per_token == 3200 + 256 and weights.tied_output
    else:  # one embedding row (8 x 4 bytes) + the MLP + the separate output matrix
        assert weights.bytes_per_token == 32 + 256 + 8 * 100 * 2 and not weights.tied_output


def test_not_a_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "x.gguf"
    path.write_bytes(b"nope" * 10)
    with pytest.raises(ValueError, match="not a GGUF file"):
        bandwidth.gguf_tensors(path)


def test_memory_bandwidth_is_measured_and_bound_is_bandwidth_over_bytes() -> None:
    measured = bandwidth.measure_memory_bandwidth(size_mib=64, threads=2, repeats=2)
    assert measured.best_bytes_per_s >= measured.median_bytes_per_s > 0 and measured.threads == 2
    assert bandwidth.decode_bound_tokens_per_s(400_000_000, 20e9) == 50.0
    with pytest.raises(ValueError):
        bandwidth.measure_memory_bandwidth(size_mib=1)
