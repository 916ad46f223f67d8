"""The pretraining corpus's realisation options (smile_vlm.corpus): AU tables, per-identity
variation, one-sided AUs, low intensities, head motion inside sequences and caption styles."""

import hashlib
import json

import numpy as np
import pytest

from smile_vlm import corpus, pretrain
from smile_vlm.synth.au_tables import TABLES
from smile_vlm.synth.captions import EMOTION_ADJECTIVES
from smile_vlm.synth.expressions import STRAY_AU_WEIGHT
from smile_vlm.synth.units import parse_unit

# sha256 of the captions and apex AU weights of the corpus's first 120 samples (20 procedural
# identities, 6 samples each): the corpus the pretraining drew before these options existed.
DEFAULT_SAMPLES_SHA256 = "5e51b59471bd9fefc29b42655d30041dcd081fdb4d224bc95c8097bf4234eda8"


def resolved(**options) -> dict:
    return pretrain.resolve({"pretrain": {"identities": 20, "samples_per_identity": 6, **options}})["pretrain"]


def samples(settings: dict) -> list[dict]:
    """Every sample of the corpus as ``draw_sample`` describes it (nothing rendered)."""
    out = []
    for identity in corpus.corpus_identities(settings):
        style = corpus.realiser_of(settings, identity)
        for k in range(int(settings["samples_per_identity"])):
            rng = np.random.default_rng(corpus.identity_key(settings, identity, k + 1))
            out.append(corpus.draw_sample(rng, settings, style))
    return out


def digest(rows: list[dict]) -> str:
    described = [[row["caption"], {str(au): round(w, 4) for au, w in row["apex"].items()}] for row in rows]
    return hashlib.sha256(json.dumps(described).encode()).hexdigest()


def test_default_options_draw_the_corpus_of_one_emfacs_table():
    assert digest(samples(resolved())) == DEFAULT_SAMPLES_SHA256
    spelled_out = resolved(au_tables=["emfacs"], variation={"au_dropout": 0.0}, one_sided_fraction=0.0,
                           low_intensity_fraction=0.0, head_motion={"kind": "drift"}, captions="emfacs")
    assert digest(samples(spelled_out)) == DEFAULT_SAMPLES_SHA256
    assert digest(samples(resolved(au_tables=["facs_guide"]))) != DEFAULT_SAMPLES_SHA256


def _emotion_units(rows: list[dict], emotion: str) -> list[set]:
    """AU numbers of the emotion's samples above a stray AU's largest weight."""
    return [{parse_unit(au)[0] for au, w in row["weights"].items() if w > STRAY_AU_WEIGHT}
            for row in rows if row["emotion"] == emotion]


def test_au_tables_realise_every_emotion_through_the_chosen_tables_only():
    du = samples(resolved(au_tables=["du2014"], samples_per_identity=12))
    for emotion, recipes in TABLES["du2014"].items():
        allowed = set().union(*(recipe.aus() for recipe in recipes))
        drawn = _emotion_units(du, emotion)
        assert drawn and all(units <= allowed for units in drawn), (emotion, drawn)
    # EMFACS disgust has AU16 and AU15, which Du et al.'s disgust never shows
    emfacs = samples(resolved(samples_per_identity=12))
    assert any({15, 16} <= units for units in _emotion_units(emfacs, "disgust"))
    assert not any(units & {15, 16} for units in _emotion_units(du, "disgust"))


def test_unknown_tables_and_variation_keys_are_refused_before_anything_renders():
    with pytest.raises(ValueError, match="pretrain.au_tables \\['emfax'\\]: choose one or more of emfacs"):
        resolved(au_tables=["emfax"])
    with pytest.raises(ValueError, match="unknown pretrain.variation settings \\['dropout'\\]"):
        resolved(variation={"dropout": 0.1})
    with pytest.raises(ValueError, match="pretrain.head_motion.kind 'shake'"):
        resolved(head_motion={"kind": "shake"})
    with pytest.raises(ValueError, match="pretrain.captions 'labels'"):
        resolved(captions="labels")


def test_variation_reaches_each_identity_and_sample():
    plain = samples(resolved(samples_per_identity=12))
    dropped = samples(resolved(samples_per_identity=12, variation={"au_dropout": 0.6}))
    count = lambda rows: np.mean([len(row["weights"]) for row in rows if row["emotion"]])  # noqa: E731
    assert count(dropped) < 0.7 * count(plain)
    # per-identity gains: the same draws scaled differently per identity and AU
    gained = samples(resolved(variation={"au_gain_sigma": 0.3}))
    ratios = {round(gained[k]["weights"][au] / w, 6) for k, row in enumerate(samples(resolved()))
              for au, w in row["weights"].items() if w}
    assert len(ratios) > 20


def test_one_sided_aus_are_captioned_with_their_side_and_move_one_side_of_the_face():
    rows = samples(resolved(one_sided_fraction=0.5))
    sided = [row for row in rows if any(parse_unit(au)[1] for au in row["apex"])]
    assert len(sided) > 10
    assert all(("left" in row["caption"] or "right" in row["caption"]) for row in sided)
    assert any("(L" in row["caption"] for row in sided) and any("(R" in row["caption"] for row in sided)
    assert not any("left" in row["caption"] or "right" in row["caption"] for row in samples(resolved()))

    settings = resolved(one_sided_fraction=0.5)
    model = corpus.face_of(settings, corpus.corpus_identities(settings)[0])

    def mirror_gap(weights: dict) -> float:  # the rest face is mirror-symmetric: x -> -x, y and z kept
        moved = model.deform(weights).grid - model.rest
        mirrored = moved[:, ::-1] * np.array([-1.0, 1.0, 1.0])
        return float(np.abs(moved - mirrored)[model.valid & model.valid[:, ::-1]].max())

    one_sided = next(row["weights"] for row in sided if all(parse_unit(au)[1] for au in row["weights"]))
    both_sides = {parse_unit(au)[0]: w for au, w in one_sided.items()}
    assert mirror_gap(one_sided) > 1.0 and mirror_gap(both_sides) < 1e-6


def test_an_identitys_side_bias_names_no_side_where_both_sides_act():
    rows = samples(resolved(variation={"asymmetry": 0.3}))
    split = [row for row in rows if any(isinstance(au, str) for au in row["apex"])]  # weights split by side
    assert len(split) > 0.5 * len(rows)
    naming = [row for row in split if "left" in row["caption"] or "right" in row["caption"]]
    assert len(naming) < 0.2 * len(split)  # only an AU whose weaker side falls below the trace level
    assert any("EMFACS prototype" in row["caption"] for row in split)
    assert corpus.both_sides_merged({"L12": 0.6, "R12": 0.4, "R14": 0.5, "L4": 0.05}) == {12: 0.5, "R14": 0.5, "L4": 0.05}


def test_low_intensity_fraction_draws_that_share_from_the_low_range():
    rows = samples(resolved(low_intensity_fraction=1.0, low_intensity=[0.1, 0.2], samples_per_identity=10))
    free = [w for row in rows if row["weights"] and row["emotion"] is None for w in row["weights"].values()]
    assert free and all(0.1 <= w <= 0.2 for w in free)
    strong = ("marked", "severe", "maximum")
    assert not any(word in row["caption"] for row in rows if row["emotion"] is None for word in strong)
    plain = samples(resolved(samples_per_identity=10))
    assert any(word in row["caption"] for row in plain if row["emotion"] is None for word in strong)
    half = samples(resolved(low_intensity_fraction=0.5, low_intensity=[0.1, 0.2], samples_per_identity=10))
    low = [all(w <= 0.2 for w in row["weights"].values()) for row in half if row["weights"] and row["emotion"] is None]
    assert 0.3 < np.mean(low) < 0.7


def test_caption_styles_name_the_emfacs_emotion_the_drawn_one_or_none():
    default, drawn, units = (samples(resolved(captions=style)) for style in ("emfacs", "drawn", "units"))
    assert [row["apex"] for row in drawn] == [row["apex"] for row in default]  # only the words change
    assert not any(": a" in row["caption"] for row in units)
    assert any("EMFACS prototype" in row["caption"] for row in default)
    named = [row for row in drawn if row["emotion"] and not row["caption"].endswith("no action units.")]
    assert named and all(f" {EMOTION_ADJECTIVES[row['emotion']]} face." in row["caption"] for row in named)
    assert not any(": a" in row["caption"] for row in drawn if row["emotion"] is None)


def test_head_motion_moves_the_head_inside_sequences_only(tmp_path):
    tiny = {"identities": 2, "samples_per_identity": 4, "render_size": 32, "frames": 3, "dynamic_fraction": 0.5}
    still = corpus.build_corpus(pretrain.resolve({"pretrain": tiny}))
    moving = corpus.build_corpus(pretrain.resolve({"pretrain": {**tiny, "head_motion": {"kind": "jitter", "jitter_deg": 8.0}}}))
    dynamic = np.asarray(still["dynamic"])
    assert 0 < dynamic.sum() < len(dynamic) and still["captions"] == moving["captions"]
    assert np.array_equal(still["images"][~dynamic], moving["images"][~dynamic])
    gap = np.abs(still["images"][dynamic].astype(int) - moving["images"][dynamic]).mean()
    assert gap > 1.0, gap


def test_registration_takes_the_jitter_out_of_corpus_sequences():
    """Off by default (the corpus as before); on, the dynamic images of sequences with per-frame
    head jitter come closer to those of the same sequences with the jitter scaled to zero."""
    # closed faces with the generator's own AU fields: the case the registration was built and tested on
    tiny = {"identities": 2, "samples_per_identity": 4, "render_size": 48, "frames": 6, "dynamic_fraction": 0.5,
            "openings": False, "unit_shapes": 0.0}
    assert pretrain.resolve({"pretrain": tiny})["pretrain"]["registration"] == "none"
    correlations = {}
    for method in ("none", "auto"):
        built = [corpus.build_corpus(pretrain.resolve({"pretrain": {
            **tiny, "registration": method, "head_motion": {"kind": "jitter", "jitter_deg": amplitude,
                                                            "jitter_mm": 3.0 * amplitude / 4.0}}}))
            for amplitude in (0.0, 4.0)]
        dynamic = np.asarray(built[0]["dynamic"])
        still, moving = (b["images"][dynamic].astype(float) for b in built)
        correlations[method] = np.mean([np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(still, moving)])
    # (what registration cannot know: the mean of six jitters, a pose offset of a degree or two)
    assert correlations["none"] < 0.5 < correlations["auto"], correlations


def test_learning_curve_benchmark_labels_held_out_realisations():
    import importlib.util
    from pathlib import Path

    from smile_vlm.settings import section_defaults

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_learning_curve.py"
    spec = importlib.util.spec_from_file_location("bench_learning_curve", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ran = resolved(au_tables=["emfacs", "facs_guide"], one_sided_fraction=0.3)
    vision = {"settings": json.dumps({"pretrain": ran})}
    assert bench.realisation_note(vision, ["du2014"]).startswith("held-out realisation: evaluated on du2014, "
                                                                 "pretrained on emfacs + facs_guide")
    assert bench.realisation_note(vision, ["du2014", "facs_guide"]).startswith("the pretraining's own")
    assert bench.corpus_options(vision) == {"au_tables": ["emfacs", "facs_guide"], "one_sided_fraction": 0.3}
    assert bench.corpus_options({"settings": json.dumps({"pretrain": resolved()})}) == {}
    written_out = {**resolved(), "augment": section_defaults("pretrain", "augment")}  # as the workflow stores it
    assert bench.corpus_options({"settings": json.dumps({"pretrain": written_out})}) == {}
    assert bench.corpus_options({"settings": json.dumps({"pretrain": {**written_out, "augment": {"noise_std": 0.1}}})}) \
        == {"augment": {**section_defaults("pretrain", "augment"), "noise_std": 0.1}}
    assert bench.corpus_options({"settings": json.dumps({"pretrain": resolved(au_align=0.0, openings=True, epochs=3)})}) \
        == {"au_align": 0.0, "openings": True}
    import argparse

    args = argparse.Namespace(ict_dir=None, face_source="procedural", folds=3, dataset="bu3dfe", levels=[3, 4],
                              render_size=64, frames=8, registration="auto", head_motion="drift", variation="{}",
                              au_tables=None, pretrain="{}", train="{}", variant="{}")
    assert bench.cell_overlay(args, 15, None)["experiments"]["bu3dfe_subset1"]["protocol"]["levels"] == [3, 4]
    assert bench.level_tag(args) == ""  # the paper's subset 1 keeps the cell folders of earlier runs
    args.levels = [4, 1, 2, 3]
    assert bench.cell_overlay(args, 15, None)["experiments"]["bu3dfe_subset1"]["protocol"]["levels"] == [4, 1, 2, 3]
    assert bench.level_tag(args) == "-levels1234"


def test_openings_cut_eye_fissures_and_an_open_mouth():
    from smile_vlm.synth.face import FaceModel
    from smile_vlm.synth.identity import sample_identity

    model = FaceModel(sample_identity(np.random.default_rng(0)), 40)
    full, neutral = len(model.triangles), len(model.open_triangles({}))
    assert neutral < full  # open eyes are holes
    assert len(model.open_triangles({43: 1.0})) == full  # closed eyes, closed mouth: no hole
    assert len(model.open_triangles({5: 1.0})) < neutral  # the upper lid raiser widens them
    assert len(model.open_triangles({27: 0.1})) == neutral  # a trace of mouth stretch keeps the lips closed
    assert len(model.open_triangles({27: 1.0})) < neutral  # an open mouth is a hole


def test_openings_reach_the_corpus_renders_and_false_keeps_the_closed_face():
    settings = pretrain.resolve({"pretrain": {"identities": 1, "samples_per_identity": 2, "render_size": 32,
                                              "frames": 3, "ict_dir": None, "openings": False}})
    closed = corpus.build_corpus(settings)
    settings["pretrain"]["openings"] = True
    opened = corpus.build_corpus(settings)
    assert closed["captions"] == opened["captions"] and closed["units"] == opened["units"]
    assert not np.array_equal(closed["images"], opened["images"])
    assert corpus.corpus_digest(settings) != corpus.corpus_digest(pretrain.resolve(
        {"pretrain": {"identities": 1, "samples_per_identity": 2, "render_size": 32, "frames": 3, "ict_dir": None,
                      "openings": False}}))


def test_unit_shapes_vary_each_face_symmetrically_and_zero_keeps_the_fields():
    from smile_vlm.synth.face import FaceModel
    from smile_vlm.synth.identity import sample_identity
    from smile_vlm.synth.unit_shapes import bilinear, vary_unit_fields

    def model():
        return FaceModel(sample_identity(np.random.default_rng(0)), 40)

    template = model()
    kept = model()
    vary_unit_fields(kept, np.random.default_rng(1), 0.0)
    assert all(np.array_equal(kept.au_basis[au], template.au_basis[au]) for au in template.au_basis)
    grid = template.au_basis[12]
    rows, cols = np.meshgrid(np.arange(grid.shape[0], dtype=float), np.arange(grid.shape[1], dtype=float), indexing="ij")
    assert np.allclose(bilinear(grid, rows, cols), grid)
    assert not bilinear(grid, rows + grid.shape[0], cols).any()  # outside the grid: no motion

    one, two = model(), model()
    vary_unit_fields(one, np.random.default_rng(1), 0.3)
    vary_unit_fields(two, np.random.default_rng(2), 0.3)
    for au in (1, 12, 43):
        field, other, base = one.au_basis[au], two.au_basis[au], template.au_basis[au]
        assert not np.allclose(field, base) and not np.allclose(field, other)
        assert np.corrcoef(field.ravel(), base.ravel())[0, 1] > 0.6  # still that AU's region and direction
        # left-right symmetric: x mirrored with its sign flipped, y and z mirrored
        assert np.allclose(field[..., 0], -field[:, ::-1, 0], atol=1e-9)
        assert np.allclose(field[..., 1:], field[:, ::-1, 1:], atol=1e-9)


def test_unit_shapes_reach_the_corpus_renders_and_its_digest():
    settings = pretrain.resolve({"pretrain": {"identities": 1, "samples_per_identity": 2, "render_size": 32,
                                              "frames": 3, "ict_dir": None, "prototype_fraction": 1.0,
                                              "unit_shapes": 0.0}})
    plain = corpus.build_corpus(settings)
    varied = pretrain.resolve({"pretrain": {**settings["pretrain"], "unit_shapes": 0.3}})
    shaped = corpus.build_corpus(varied)
    assert plain["captions"] == shaped["captions"] and plain["units"] == shaped["units"]
    assert not np.array_equal(plain["images"], shaped["images"])
    assert corpus.corpus_digest(varied) != corpus.corpus_digest(settings)


def test_openings_as_a_share_cut_that_share_of_samples_and_draw_nothing_else():
    plain, half = samples(resolved(openings=False)), samples(resolved(openings=0.5))
    assert [row["caption"] for row in half] == [row["caption"] for row in plain]
    opened = sum(row["open"] for row in half) / len(half)
    assert 0.35 < opened < 0.65, opened
    assert not any(row["open"] for row in plain) and all(row["open"] for row in samples(resolved(openings=True)))


def test_learning_curve_cell_carries_train_and_pretrained_variant_overrides(tmp_path):
    import argparse
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_learning_curve.py"
    spec = importlib.util.spec_from_file_location("bench_learning_curve", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = argparse.Namespace(ict_dir=str(tmp_path), face_source="procedural", folds=3, dataset="bu4dfe", levels=[3, 4],
                              registration="auto", head_motion="drift", frames=8, variation="{}", au_tables=None,
                              render_size=96, pretrain="{}", train='{"epochs": 30}', variant='{"init_head": true}')
    overlay = bench.cell_overlay(args, 15, tmp_path / "vision.pt")
    assert overlay["train"] == {"epochs": 30}
    assert overlay["variants"]["smile_vlm_pretrained"] == {"base": "smile_vlm", "init_head": True,
                                                           "vision": {"init": str(tmp_path / "vision.pt")}}
    plain = bench.cell_overlay(argparse.Namespace(**{**vars(args), "train": "{}", "variant": "{}"}), 15, None)
    assert "train" not in plain and plain["variants"] == {}
