"""benchmarks/job_times.py: job-minutes and peak memory per rule from the rules' benchmark files."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def write(path: Path, *rows: tuple[float, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(f"{s}\t0:00:00\t{rss}\t0\t0\t0\t0\t0\t0\t0\n" for s, rss in rows))


def test_sums_jobs_per_rule_and_keeps_the_peak_memory(tmp_path):
    bench = tmp_path / "benchmarks"
    write(bench / "render" / "bu4dfe" / "F001.tsv", (30.0, "200.5"))
    write(bench / "render" / "bu4dfe" / "F002.tsv", (90.0, "350.0"))
    write(bench / "train" / "bu4dfe" / "smile_vlm" / "fold0.tsv", (100.0, "900"), (140.0, "-"))  # 2 repeats
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "job_times.py"), str(bench)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[1:]}
    assert rows["render"] == ["2", "2.0", "60.0", "350"]
    assert rows["train"] == ["1", "2.0", "120.0", "900"]  # a repeated job counts with its mean
    assert rows["total"] == ["3", "4.0"]


def test_a_missing_folder_says_what_to_do(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "job_times.py"), str(tmp_path / "none")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "is not a folder: run the workflow first" in result.stderr
