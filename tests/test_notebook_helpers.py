"""Small library functions the notebooks use to show things: each returns what the notebook prints."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from helpers.config import Settings
from helpers.infra import aws, manifests, scheduling
from helpers.layers.rag.stores.opensearch import shorten_vectors
from helpers.target import Target

SETTINGS = Settings(_env_file=None)


def test_with_flavour_keeps_target_and_chapter_and_changes_what_renders() -> None:
    auto = Target("eks", SETTINGS, flavour="auto-mode")
    karpenter = auto.with_flavour("karpenter")
    assert (karpenter.name, karpenter.chapter, karpenter.flavour) == ("eks", None, "karpenter")
    classes = {m.kind for m in karpenter.render("01-cluster-and-nodepools")}
    assert "EC2NodeClass" in classes and "NodeClass" not in classes
    assert "NodeClass" in {m.kind for m in auto.render("01-cluster-and-nodepools")}


def test_find_returns_the_object_or_names_the_missing_one() -> None:
    objects = Target("eks", SETTINGS).render("01-cluster-and-nodepools")
    assert manifests.find(objects, "NodePool", "gpu").doc["metadata"]["name"] == "gpu"
    with pytest.raises(KeyError, match="NodePool/nope"):
        manifests.find(objects, "NodePool", "nope")


def test_taint_text() -> None:
    assert scheduling.taint_text([]) == "none"
    assert scheduling.taint_text([{"key": "nvidia.com/gpu", "effect": "NoSchedule"},
                                  {"key": "llm-eks-workshop/pool", "value": "x86", "effect": "NoSchedule"}]) == \
        "nvidia.com/gpu:NoSchedule, llm-eks-workshop/pool=x86:NoSchedule"


def test_verdicts_row_marks_the_chosen_pool_and_says_why_not_the_others() -> None:
    t = Target("eks", SETTINGS)
    pools = scheduling.node_pools(t)
    gpu_pod = scheduling.Workload(name="two-gpus", chapter="test", replicas=1, cpu="8", memory="48Gi", gpus=2,
                                  tolerations=(scheduling.GPU_TOLERATION,), image_architectures=("amd64",))
    (placement,) = scheduling.explain([gpu_pod], pools, aws.load_instance_types())
    row = placement.verdicts_row()
    assert row["workload"] == "two-gpus" and row[placement.pool] == "✔" and placement.pool == "gpu"
    assert set(row) == {"workload", *(p.name for p in pools)}
    assert all(v and v != "✔" for k, v in row.items() if k not in ("workload", "gpu")), row


def test_shorten_vectors_cuts_every_vector_and_keeps_everything_else() -> None:
    body = [{"index": {"_id": "a"}}, {"vector": [0.1, 0.2, 0.3, 0.4, 0.5], "text": "t", "meta": {"vector": [1, 2, 3, 4]}}]
    assert shorten_vectors(body, keep=2) == [
        {"index": {"_id": "a"}},
        {"vector": [0.1, 0.2, "... 3 more"], "text": "t", "meta": {"vector": [1, 2, "... 2 more"]}},
    ]


@contextmanager
def shell_for(target_name: str) -> Iterator[Any]:
    """A real IPython shell with the workshop's magics for a target, cleared afterwards."""
    from IPython.core.interactiveshell import InteractiveShell

    from helpers.notebook import register_magics

    shell = InteractiveShell.instance()
    register_magics(Target(target_name, SETTINGS))
    try:
        yield shell
    finally:
        InteractiveShell.clear_instance()


def test_solution_magic_checks_the_solution_in_a_copy_and_leaves_the_answers_alone(capsys) -> None:
    with shell_for("local") as shell:
        shell.run_cell("from helpers.notebook import self_check\nanswer = None  # your answer", store_history=True)
        shell.run_cell('self_check("exercise 1", answer, 42)', store_history=True)
        good = shell.run_cell("%%solution\nanswer = 6 * 7", store_history=True)
        assert good.success and "1 of 1 self-checks say correct" in capsys.readouterr().out
        assert shell.user_ns["answer"] is None, "the learner's answer is untouched"
        bad = shell.run_cell("%%solution\nanswer = 41", store_history=True)
        assert not bad.success and isinstance(bad.error_in_exec, AssertionError)
        assert "not quite: 41" in str(bad.error_in_exec)


def test_solution_magic_checks_a_self_check_cell_that_is_gated_by_on(capsys) -> None:
    """The self-check cell of a local-only exercise starts with `%%on local`: its answer comes from the copy too."""
    with shell_for("local") as shell:
        shell.run_cell("from helpers.notebook import self_check\nanswer = None  # your answer", store_history=True)
        shell.run_cell('%%on local\nexpected = 6 * 7\nself_check("exercise 1", answer, expected)', store_history=True)
        good = shell.run_cell("%%solution local\nanswer = 42", store_history=True)
        assert good.success, good.error_in_exec
        assert "1 of 1 self-checks say correct" in capsys.readouterr().out
        assert shell.user_ns["answer"] is None


def test_solution_magic_with_a_need_is_skipped_on_the_other_target(capsys) -> None:
    with shell_for("eks") as shell:
        done = shell.run_cell("%%solution local\nraise RuntimeError('must not run')", store_history=True)
        assert done.success and "checked on the local target" in capsys.readouterr().out


def test_table_shows_numbers_as_a_reader_writes_them_and_no_nan() -> None:
    from helpers.notebook import table

    html = table([{"a": 0.57, "b": 40.2, "c": 12.0, "d": 4.6016, "e": None, "f": "text"},
                  {"a": 0.1 + 0.2, "b": float("nan"), "c": 3, "d": 110.44, "e": 1.5, "f": ""}], "numbers").to_html()
    for shown in (">0.57<", ">40.2<", ">12<", ">4.6016<", ">0.3<", ">110.44<", ">1.5<", ">text<"):
        assert shown in html, shown
    assert "0.570000" not in html and "nan" not in html.lower() and "None" not in html
