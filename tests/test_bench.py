"""`make bench` (tools/bench.py) leaves no process behind: every bench shares one isolated stack, stopped at the end."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

from helpers import config
from helpers.local import records

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import bench  # noqa: E402  (tools/bench.py)


def test_a_bench_inside_another_reuses_its_stack_and_only_the_outer_one_stops_it(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the bench's state folders land here
    monkeypatch.delenv(bench.ISOLATED, raising=False)
    stopped = []
    from helpers.local import stack

    monkeypatch.setattr(stack, "down", lambda: stopped.append(config.get_settings().state_dir) or [])
    before = config.get_settings().state_dir
    with bench.isolated_stack() as outer:
        assert outer.state_dir != before and str(outer.state_dir).startswith(str(tmp_path))
        with bench.isolated_stack() as inner:  # e.g. tools/bench_gateway.py's own block, run by tools/bench.py
            assert inner.state_dir == outer.state_dir
        assert stopped == []  # the inner block stopped nothing: later benches still find the stack
    assert stopped == [outer.state_dir]
    assert config.get_settings().state_dir == before  # the caller's settings are back


@pytest.mark.services
def test_the_cheapest_bench_leaves_no_process_of_its_stack(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv(bench.ISOLATED, raising=False)
    assert bench.main(["--only", "stack-up"]) == 0
    report = capsys.readouterr().out
    assert "stack up -> healthy model server" in report
    assert "processes of the bench's stack left after it" in report
    assert processes_marked_under(tmp_path) == []  # the model server it started, the supervisor: all gone


def processes_marked_under(folder: Path) -> list[int]:
    """Pids of processes whose stack marker names a state folder inside `folder`."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get(records.MARKER, "").startswith(str(folder.resolve())):
                found.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


def test_the_readme_table_is_written_from_a_saved_report_between_its_markers(tmp_path):
    import bench_report

    rows = [bench.row("agent KB answer p50", "6.7 s", "<= 8 s", True),
            bench.row("  memory: ray-serve (9 processes)", "800 MiB | big", "reported", None),
            bench.row("whole-stack RSS", "2.9 GB", "<= 2.5 GB", False)]
    report = bench_report.save(rows, tmp_path / "report.json")
    assert report["machine"]["cpus"] and report["commit"] and report["rows"] == rows
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{bench_report.START}\nold table\n{bench_report.END}\n\n## next\n")
    bench_report.update_readme(report, readme)
    text = readme.read_text()
    assert "old table" not in text and text.endswith(f"{bench_report.END}\n\n## next\n")
    assert "| agent KB answer p50 | 6.7 s | <= 8 s | ok |" in text
    assert "| &nbsp;&nbsp;memory: ray-serve (9 processes) | 800 MiB \\| big | reported | info |" in text
    assert "| whole-stack RSS | 2.9 GB | <= 2.5 GB | missed |" in text
    assert f"{report['machine']['cpus']} CPUs" in text and report["commit"] in text
    bench_report.update_readme(report, readme)  # again: still one table
    assert readme.read_text().count("| figure | measured | goal | result |") == 1
    readme.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        bench_report.update_readme(report, readme)
