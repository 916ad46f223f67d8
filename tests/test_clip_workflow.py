"""The paper's setting through the whole workflow: a CLIP text tower (frozen) and a CLIP vision tower
(fine-tuned), both `kind: hf_clip`, on the tiny BU-4DFE configuration: the table, the deployable
model with its model card, and `predict` through Snakemake.

The CLIP is tiny and random (saved here with save_pretrained), so the numbers mean nothing; what is
checked is that the real loading path, the freezing and the training reach every rule.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "workflow" / "tiny.yaml"
transformers = pytest.importorskip("transformers")

from tiny_clip import save_tiny_clip  # noqa: E402


def folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def snakemake(workdir: Path, overlay: Path, *targets: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
               "--configfile", str(workdir / "config.yaml"), str(TINY), str(overlay), "--cores", "2", *targets]
    return subprocess.run(command, capture_output=True, text=True, timeout=1200)


@pytest.mark.slow
def test_clip_towers_through_table_final_model_and_predict(tmp_path):
    from smile_vlm.models.encoders import load_text_encoder

    _, _, clip = save_tiny_clip(tmp_path)
    clip_digest = folder_digest(clip)
    workdir = tmp_path / "wd"
    workdir.mkdir()
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    overlay = tmp_path / "clip.yaml"
    overlay.write_text(yaml.safe_dump({
        "encoders": {"text": {"kind": "hf_clip", "name_or_path": str(clip)},
                     "vision": {"kind": "hf_clip", "name_or_path": str(clip)}},
        "experiments": {"bu4dfe": {"variants": ["smile_vlm"]}},
        "train": {"epochs": 1, "lr": 1.0e-3},
        "predict": {"model": "results/bu4dfe/final/smile_vlm/model.pt", "inputs": "results/synthetic/bu4dfe"},
    }))

    result = snakemake(workdir, overlay, "results/tables/bu4dfe.csv", "results/bu4dfe/final/smile_vlm/model_card.md")
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    # The subject folders of predict.inputs exist only now: a second run plans one job per subject.
    result = snakemake(workdir, overlay, "results/predict/predictions.csv")
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    results = workdir / "results"

    table = pd.read_csv(results / "tables" / "bu4dfe.csv")
    ours = table[(table["source"] == "ours") & (table["fold"].astype(str) != "mean")]
    assert ours["method"].tolist() == ["smile_vlm", "smile_vlm"] and ours["accuracy"].between(0, 100).all()

    # Text tower frozen: nothing of it is in the model, the checkpoint on disk is untouched, and the
    # prompt embeddings every job used are the ones the saved tower computes.
    assert folder_digest(clip) == clip_digest
    bank = torch.load(results / "text_bank.pt", weights_only=True)
    assert bank["about"]["text_encoder"]["kind"] == "hf_clip"
    texts = bank["texts"][:20]
    torch.testing.assert_close(bank["embeddings"][:20], load_text_encoder({"kind": "hf_clip", "name_or_path": str(clip)})
                               .encode(texts), atol=1e-5, rtol=1e-4)
    final = torch.load(results / "bu4dfe" / "final" / "smile_vlm" / "model.pt", weights_only=True)
    assert not any("text_model" in key for key in final["model"])

    # Vision tower fine-tuned: its weights moved away from the saved CLIP's.
    pretrained = transformers.CLIPModel.from_pretrained(clip).vision_model.state_dict()
    prefix = "encoder.vision_encoder.vision_model."
    tuned = {key[len(prefix):]: value for key, value in final["model"].items() if key.startswith(prefix)}
    assert set(tuned) == set(pretrained)
    moved = [key for key in tuned if not torch.allclose(tuned[key].float(), pretrained[key].float(), atol=1e-6)]
    assert len(moved) > len(tuned) // 2, f"only {moved} moved"

    card = (results / "bu4dfe" / "final" / "smile_vlm" / "model_card.md").read_text()
    assert "hf_clip" in card and "subjects: 4" in card and "Mean over 2 subject-independent folds" in card

    # The checkpoint reloads for predict: every sequence of every subject gets probabilities.
    predictions = pd.read_csv(results / "predict" / "predictions.csv", dtype={"frames": str})
    assert sorted(predictions["subject"].unique()) == ["F001", "F002", "M001", "M002"]
    assert len(predictions) == 4 * 6 and (predictions["status"] == "ok").all()
    probabilities = predictions[[c for c in predictions.columns if c.startswith("p_")]]
    assert list(probabilities.columns) == [f"p_{name}" for name in final["classes"]]
    assert (probabilities.sum(axis=1) - 1).abs().max() < 1e-4
    assert (predictions["frames"] == "0|2|5|7").all()  # 4 of the 8 synthetic frames (tiny.yaml)
