"""The index rule's reruns: render.frames decides which frames it parses, its workers are speed only.

Builds only the synthetic data and two manifests (BU-3DFE, static; BU-4DFE, sequences) on the
tiny configuration, then asks Snakemake what a change would rerun.
"""

import shutil

import pandas as pd
import pytest

from test_workflow import REPO, config_overlay, planned_jobs, snakemake

TARGETS = ["results/bu3dfe/manifest.csv", "results/bu4dfe/manifest.csv"]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("index_workflow")
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    result = snakemake(workdir, "--cores", "2", *TARGETS)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return workdir


@pytest.mark.slow
def test_render_frames_reruns_the_4d_index_only_and_workers_rerun_nothing(indexed, tmp_path):
    log = (indexed / "logs" / "index" / "bu4dfe.log").read_text()
    assert "validate: sampled:" in log and "frames=4" in log  # tiny.yaml: render.frames 4
    manifest = pd.read_csv(indexed / "results" / "bu4dfe" / "manifest.csv")
    assert manifest.groupby("sample_id").size().min() > 4  # so frames=4 leaves frames unparsed

    frames = config_overlay(tmp_path / "frames.yaml", {"render": {"frames": 3}})
    assert planned_jobs(snakemake(indexed, "-n", *TARGETS, overlays=[frames])) == {"index": 1}
    for change in ({"index": {"workers": 2}}, {"render": {"size": 40}}):
        overlay = config_overlay(tmp_path / "change.yaml", change)
        assert planned_jobs(snakemake(indexed, "-n", *TARGETS, overlays=[overlay])) == {}, change
    # full and header checks do not depend on the frames rendered
    full = config_overlay(tmp_path / "full.yaml", {"index": {"validate": "full"}})
    assert planned_jobs(snakemake(indexed, "-n", *TARGETS, overlays=[full])) == {"index": 2}
