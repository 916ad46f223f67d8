"""Who loads torch: training, evaluation and prediction do; building the workflow's DAG and the
preprocessing side (stores, views, tables, figures) do not, since torch (with transformers)
takes seconds to import and snakemake re-reads the Snakefile in every job."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "sentence_transformers")
# One import statement on one line, at any indentation: the input functions that import lazily
# (e.g. predict_subjects) also run while the DAG is built.
IMPORT_LINE = re.compile(r"^[ \t]*((?:from[ \t]+[\w.]+[ \t]+)?import[ \t]+[\w., \t]+)$", re.MULTILINE)


def heavy_modules_after(statements: list[str]) -> list[str]:
    """The HEAVY modules a fresh interpreter holds after running ``statements`` (in the repository)."""
    probe = "\n".join([*statements, "import sys",
                       "import json",
                       f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"])
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def workflow_imports() -> list[str]:
    """Every import statement of the Snakefile and the rules files, as written."""
    files = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    statements = []
    for path in files:
        statements += [match.group(1).strip() for match in IMPORT_LINE.finditer(path.read_text())]
    return list(dict.fromkeys(statements))


def test_the_probe_sees_torch_when_it_is_loaded():
    # the training side loads torch: without this the checks below could pass on a broken probe
    assert "torch" in heavy_modules_after(["import smile_vlm.data"])


def test_building_the_dag_loads_no_torch():
    statements = workflow_imports()
    # the parser found the workflow's own imports (so an empty list cannot pass)
    assert "from smile_vlm import configcheck, jobs" in statements
    assert heavy_modules_after(statements) == []


@pytest.mark.parametrize("module", ["smile_vlm.store", "smile_vlm.views", "smile_vlm.report",
                                    "smile_vlm.summary", "smile_vlm.figures", "smile_vlm.cli",
                                    "smile_vlm.jobs", "smile_vlm.corpus", "smile_vlm.render", "smile_vlm.index"])
def test_preprocessing_and_reporting_modules_load_no_torch(module):
    assert heavy_modules_after([f"import {module}"]) == []
