"""Bench figure of issue 4: chat tokens/s on the local stand-in for vLLM beside the memory-bandwidth bound.

    .venv/bin/python tools/bench_models.py

Runs in its own state folder and ports (never touches a running workshop stack): starts the model server,
measures the decode rate over a few streamed answers, measures memory bandwidth with numpy, reads the bytes
of weights per token from the GGUF file, and prints decode tok/s / bound tok/s as a ratio.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "tools")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

PROMPT = [{"role": "user", "content": "Explain in detail how a Kubernetes scheduler places a pod on a node."}]
MAX_TOKENS = 96
ROUNDS = 3


def bench_chat_bandwidth() -> dict[str, object]:
    """Decode tokens/s of the local model server, the bandwidth bound for its weights, and their ratio."""
    from bench import row  # imported here, so tools/bench.py may import this module at its top
    from openai import OpenAI

    from helpers import config
    from helpers.layers import models
    from helpers.layers.models import bandwidth
    from helpers.local import stack

    settings = config.get_settings()
    stack.ensure("model-server")
    client = OpenAI(base_url=settings.model_server_url, api_key=settings.model_server_api_key.get_secret_value())
    weights = bandwidth.weights_read_per_token(models.model_path(settings.chat_model))
    bandwidth.measure_decode_rate(client, settings.served_chat_model, PROMPT, 16)  # warm up
    rates, bandwidths = [], []
    for _ in range(ROUNDS):  # interleaved, so drift in machine load hits both alike
        rates.append(bandwidth.measure_decode_rate(client, settings.served_chat_model, PROMPT, MAX_TOKENS)
                     .decode_tokens_per_s)
        bandwidths.append(bandwidth.measure_memory_bandwidth(threads=settings.threads).best_bytes_per_s)
    rate, bw = statistics.median(rates), max(bandwidths)
    bound = bandwidth.decode_bound_tokens_per_s(weights.bytes_per_token, bw)
    value = (f"{rate:.1f} / {bound:.1f} tok/s = {rate / bound:.2f}x "
             f"({weights.bytes_per_token / 1e6:.0f} MB/token at {bw / 1e9:.1f} GB/s)")
    return row("chat tokens/s vs bandwidth bound", value, "ratio printed", None)


def main() -> int:
    """Run the bench alone, in an isolated stack, and print its row."""
    from bench import isolated_stack

    with isolated_stack():
        result = bench_chat_bandwidth()
    print(f"{result['figure']}: {result['value']}  (target: {result['target']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
