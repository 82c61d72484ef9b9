"""What notebook 02 measures to say why decoding is as fast as it is: who had the CPUs (CpuMeter), and whether more
llama.cpp threads decode faster (measure_thread_scaling, on the real smoke model in this process)."""

from __future__ import annotations

import os
import time

import psutil
import pytest

from helpers import config
from helpers.layers import models
from helpers.layers.models import bandwidth


def test_cpu_use_says_who_used_the_cpus() -> None:
    quiet = bandwidth.CpuUse(wall_s=2.0, cpus=2, measured_cpu_s=3.8, busy_cpu_s=3.9, load_average=1.1)
    assert quiet.measured_cpus == pytest.approx(1.9) and quiet.other_cpus == pytest.approx(0.05)
    assert not quiet.busy() and quiet.describe().endswith("the cores were free for the measurement")
    busy = bandwidth.CpuUse(wall_s=2.0, cpus=2, measured_cpu_s=2.0, busy_cpu_s=4.0, load_average=3.6)
    assert busy.other_cpus == pytest.approx(1.0) and busy.busy()
    assert "1.00 by other processes; load average (1 min) 3.60: the machine was busy" in busy.describe()
    skewed = bandwidth.CpuUse(wall_s=1.0, cpus=2, measured_cpu_s=1.0, busy_cpu_s=0.9, load_average=0.1)
    assert skewed.other_cpus == 0.0  # counters read a moment apart never give a negative share


def test_cpu_meter_counts_this_process_work() -> None:
    with bandwidth.CpuMeter([psutil.Process()]) as meter:
        end = time.process_time() + 0.3
        while time.process_time() < end:  # burn 0.3 s of CPU in this process
            pass
    use = meter.use
    assert use is not None and use.cpus == os.cpu_count()
    assert use.measured_cpu_s >= 0.25 and use.busy_cpu_s >= use.measured_cpu_s * 0.8 and use.wall_s >= 0.25
    assert use.load_average == pytest.approx(os.getloadavg()[0], abs=2.0)


def test_bandwidth_keeps_its_slowest_run() -> None:
    measured = bandwidth.measure_memory_bandwidth(size_mib=64, threads=1, repeats=3)
    assert 0 < measured.worst_bytes_per_s <= measured.median_bytes_per_s <= measured.best_bytes_per_s
    assert measured.worst_gb_s == measured.worst_bytes_per_s / 1e9


def test_thread_scaling_decodes_with_each_thread_count_in_alternation() -> None:
    name = config.get_settings().smoke_model
    if not models.is_verified(name):
        pytest.skip(f"{name} is not fetched (make workshop fetches it)")
    rates = bandwidth.measure_thread_scaling(models.model_path(name), threads=(1, 2), tokens=6, rounds=2)
    assert [r.threads for r in rates] == [1, 2, 1, 2]
    assert all(r.tokens == 6 and r.decode_tokens_per_s > 0 for r in rates)


def memory_at(*gb_s: float) -> dict[int, bandwidth.Bandwidth]:
    return {n: bandwidth.Bandwidth(g * 1e9, g * 1e9, n, 256, 5, g * 1e9) for n, g in enumerate(gb_s, start=1)}


def test_decode_limit_reads_arithmetic_from_a_slow_single_thread() -> None:
    # 400 MB per token: 13.5 tokens/s with one thread reads 5.4 GB/s of the 24 one thread copies
    text = bandwidth.decode_limit({1: 13.5, 2: 24.3}, memory_at(24.0, 27.0), 400_000_000)
    assert text.startswith("arithmetic: 1 thread(s) read the weights at only 22% of the bandwidth")
    assert "2 threads decode 1.80x as fast as 1 (2x would be perfect scaling): the extra cores add most" in text
    assert text.endswith("with 2 threads the weights are read at 36% of the bandwidth numpy got")
    partly = bandwidth.decode_limit({1: 13.5, 2: 19.7}, memory_at(24.0, 27.0), 400_000_000)
    assert "1.46x" in partly and "part of their arithmetic" in partly


def test_decode_limit_reads_memory_when_one_thread_nearly_saturates_it() -> None:
    text = bandwidth.decode_limit({1: 50.0, 2: 52.0}, memory_at(21.0, 22.0), 400_000_000)
    assert text.startswith("memory bandwidth: 1 thread(s) already read the weights at 95%")
    assert "barely help" in text
    assert bandwidth.decode_limit({2: 30.0}, {2: memory_at(24.0, 20.0)[2]}, 400_000_000).startswith("both: 2 thread")


def test_plan_rows_are_formatted_for_reading() -> None:
    from helpers.layers.vllm import planner

    rows = planner.format_rows([{"util": 0.9, "KV tokens": 311104, "seqs @ 32,768": None, "fits": "yes",
                                 "$/h": 4.6016, "flag": True}], digits=2)
    assert rows == [{"util": "0.90", "KV tokens": "311,104", "seqs @ 32,768": "", "fits": "yes", "$/h": "4.60",
                     "flag": "True"}]
    plans = planner.format_rows(planner.plan_rows([planner.server_plan("reasoning", "g6.12xlarge")]))
    assert plans[0]["util"] == "0.90" and "." not in plans[0]["KV tokens"]
