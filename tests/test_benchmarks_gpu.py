"""benchmarks/gpu.sh: one Markdown table with a row per section (its dry run at tiny sizes on the CPU), "no GPU"
without CUDA, and a failed or late section reported as a row while the others still run."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("LLaVA-1.5-7B", "Qwen2-VL-7B", "SAM vit_h", "SAM 2.1 tiny", "SAM 2.1 large", "SAM-HQ ViT-H")
TABLE_HEADER = "| section | measure | median ms | speed-up vs reference | peak MB | parameters MB |"


def run_gpu_sh(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = os.environ | {"PYTHON": sys.executable, "OMP_NUM_THREADS": "1"} | env
    return subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh"), *args], capture_output=True, text=True, env=environment
    )


def test_the_dry_run_prints_one_table_with_a_measured_row_for_every_section():
    done = run_gpu_sh("--dry-run")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines.count(TABLE_HEADER) == 1
    rows = [line.split(" | ") for line in lines[lines.index(TABLE_HEADER) + 2 :] if line.startswith("| ")]
    for section in SECTIONS:
        measured = [row for row in rows if row[0] == f"| {section}" and float(row[2]) > 0]
        assert measured, f"no measured row for {section} in:\n{done.stdout}"
    assert not [row for row in rows if row[1].startswith(("failed", "skipped"))]


def test_without_cuda_it_says_no_gpu_and_exits_0():
    done = run_gpu_sh(CUDA_VISIBLE_DEVICES="")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("no GPU") and TABLE_HEADER not in done.stdout


def test_a_failing_section_is_one_row_saying_why_and_the_next_section_still_runs(monkeypatch):
    from benchmarks import gpu_suite

    def broken() -> list[str]:
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2.00 GiB")

    monkeypatch.setattr(gpu_suite, "sections", lambda settings: [("broken", broken), ("fine", lambda: ["| fine |"])])
    rows, notes = gpu_suite.run_sections(gpu_suite.DRY_RUN, budget_s=600)
    assert rows == [
        "| broken | failed: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB | — | — | — | — |",
        "| fine |",
    ]
    assert len(notes) == 1 and "Traceback" in notes[0]


def test_sections_that_would_start_after_the_time_budget_are_skipped_as_rows(monkeypatch):
    from benchmarks import gpu_suite

    ran = []
    monkeypatch.setattr(gpu_suite, "sections", lambda settings: [("late", lambda: ran.append("late") or [])])
    rows, _ = gpu_suite.run_sections(gpu_suite.DRY_RUN, budget_s=-1)
    assert rows == ["| late | skipped: past the time budget of -1 s | — | — | — | — |"] and ran == []
