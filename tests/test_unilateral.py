"""One-sided action units ("L12", "R14") in both face sources, their captions, contempt, and the
synthetic BP4D's AU-occurrence files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from smile_vlm.readers.names import CLASSES
from smile_vlm.synth import captions, generate
from smile_vlm.synth.expressions import ACTION_UNITS, EMOTIONS, PROTOTYPES, UNSEEN_EXPRESSIONS, expression_weights
from smile_vlm.synth.face import FaceModel
from smile_vlm.synth.identity import sample_identity
from smile_vlm.synth.layouts import BP4D_TASKS
from smile_vlm.synth.units import parse_unit, unit_key
from ict_data import ICT_DIR

MOUTH_CORNER_MINUS_X, MOUTH_CORNER_PLUS_X = 48, 54  # BU-83 rows 49 and 55


@pytest.fixture(scope="module")
def model() -> FaceModel:
    return FaceModel(sample_identity(np.random.default_rng(4)), resolution=60)


def _move(model, weights) -> np.ndarray:
    return model.deform(weights).vertices - model.rest[model.valid]


def test_unit_keys_follow_facs():
    assert parse_unit(12) == (12, None) and parse_unit("12") == (12, None)
    assert parse_unit("L12") == (12, "L") and parse_unit("R14") == (14, "R")
    assert unit_key(12, "L") == "L12" and unit_key(12) == 12
    with pytest.raises(ValueError, match="AU26 has no one-sided form"):
        parse_unit("L26")


def test_left_lip_corner_puller_lifts_only_the_subjects_left_corner(model):
    """The subject's left is +x (the face looks toward +z)."""
    move = _move(model, {"L12": 1.0})
    assert move[model.bu83[MOUTH_CORNER_PLUS_X], 1] > 5.0
    assert abs(move[model.bu83[MOUTH_CORNER_MINUS_X], 1]) < 0.2
    right = _move(model, {"R12": 1.0})
    assert right[model.bu83[MOUTH_CORNER_MINUS_X], 1] > 5.0
    assert abs(right[model.bu83[MOUTH_CORNER_PLUS_X], 1]) < 0.2


@pytest.mark.parametrize("au", [1, 4, 12, 14, 20])
def test_both_sides_together_are_the_bilateral_unit(model, au):
    both = _move(model, {f"L{au}": 0.7, f"R{au}": 0.7})
    np.testing.assert_allclose(both, _move(model, {au: 0.7}), atol=1e-9)
    assert np.abs(_move(model, {f"L{au}": 0.7}) - _move(model, {f"R{au}": 0.7})).max() > 1.0


def test_ict_one_sided_blendshapes_follow_the_same_sides():
    if not (ICT_DIR / "generic_neutral_mesh.obj").is_file():
        pytest.skip(f"no ICT-FaceKit at {ICT_DIR}")
    from smile_vlm.synth.ict import IctFaceModel

    face = IctFaceModel(ICT_DIR, np.random.default_rng(0))
    for key, sign in (("L12", 1.0), ("R12", -1.0), ("L14", 1.0), ("R20", -1.0)):
        move = np.linalg.norm(face.deform({key: 1.0}).vertices - face.rest_vertices, axis=1)
        moved_x = face.rest_vertices[move > 0.5 * move.max(), 0]
        assert moved_x.size and np.all(sign * moved_x > 0), key
    np.testing.assert_allclose(face.deform({"L12": 0.8, "R12": 0.8}).vertices, face.deform({12: 0.8}).vertices, atol=1e-9)


def test_captions_name_the_side():
    assert captions.caption({"L12": 0.6}) == "a 3D face showing marked left lip corner puller (L12)."
    assert captions.caption({"R14": 0.35, 4: 0.2}) == "a 3D face showing trace brow lowerer (AU4) and slight right dimpler (R14)."
    # a one-sided 12 is not half of happiness's 6+12
    assert captions.emfacs_emotion({6, "L12"}) is None and captions.emfacs_emotion({6, 12}) == "happiness"


@pytest.mark.parametrize("side", ["L", "R"])
def test_contempt_reads_as_contempt_on_either_side(side):
    weights = {f"{side}12": 0.8, f"{side}14": 0.6}
    assert captions.emfacs_emotion(weights) == "contempt"
    assert captions.caption(weights).endswith(": a contemptuous face, the EMFACS prototype of contempt.")
    assert captions.emfacs_emotion({"L12", "R14"}) is None  # the two sides of one face do not make it


def test_contempt_is_a_generator_expression_that_no_default_dataset_shows(model):
    assert UNSEEN_EXPRESSIONS == ("contempt",)
    weights = expression_weights("contempt", 1.0, np.random.default_rng(0), jitter=0.0, leak=0.0)
    assert captions.emfacs_emotion(captions.active_units(weights)) == "contempt"
    assert all(parse_unit(key)[1] for key in PROTOTYPES["contempt"])  # one-sided only
    assert "contempt" not in EMOTIONS and all("contempt" not in classes for classes in CLASSES.values())
    move = _move(model, weights)
    assert move[model.bu83[MOUTH_CORNER_MINUS_X], 1] > 3.0 > abs(move[model.bu83[MOUTH_CORNER_PLUS_X], 1])


# ----------------------------------------------------------------------------- BP4D AU_OCC
def test_bp4d_au_occurrence_files_hold_the_units_applied_to_every_frame(tmp_path, monkeypatch):
    applied = []
    deform = FaceModel.deform

    def recording(self, au_weights, *args, **kwargs):
        applied.append(dict(au_weights))
        return deform(self, au_weights, *args, **kwargs)

    monkeypatch.setattr(FaceModel, "deform", recording)
    settings = {"seed": 1, "resolution_4d": 16, "texture_size": 16, "subjects": {"bp4d": 2}, "frames": {"bp4d": 6}}
    summary = generate("bp4d", tmp_path, settings)
    assert len(applied) == 2 * len(BP4D_TASKS) * 6
    calls = iter(applied)
    seen = set()
    for sample in summary["samples"]:  # subjects, then tasks, then frames: the order of writing
        table = pd.read_csv(tmp_path / "AUCoding" / "AU_OCC" / f"{sample['sample_id']}.csv")
        assert list(table.columns) == [str(i) for i in range(100)]
        assert table["0"].tolist() == list(range(sample["first_frame"], sample["first_frame"] + 6))
        for _, row in table.iterrows():
            weights = next(calls)
            strongest = {}
            for key, weight in weights.items():
                au = parse_unit(key)[0]
                strongest[au] = max(strongest.get(au, 0.0), weight)
            for au in range(1, 100):
                if au not in ACTION_UNITS:
                    assert row[str(au)] == 9  # not coded
                else:
                    assert row[str(au)] == int(strongest.get(au, 0.0) >= captions.VISIBLE_WEIGHT), (sample, au)
            seen |= set(row.tolist()[1:])
    assert seen == {0, 1, 9}
