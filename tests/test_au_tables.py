"""Published emotion -> AU tables and per-subject variation (synthetic au_tables and variation)."""

from __future__ import annotations

import numpy as np
import pytest

from smile_vlm.synth import generate
from smile_vlm.synth.au_tables import TABLES, recipes_for, resolve
from smile_vlm.synth.expressions import EMOTIONS, PROTOTYPES, STRAY_CANDIDATES, expression_weights
from smile_vlm.synth.layouts import DEFAULTS
from smile_vlm.synth.profiles import temporal_profile
from smile_vlm.synth.realisation import Realiser
from smile_vlm.synth.units import parse_unit

OFF = DEFAULTS["variation"]
N = 3000


def _realiser(tables=("emfacs",), seed=0, **variation) -> Realiser:
    return Realiser(tables, {**OFF, **variation}, np.random.default_rng([seed, 99]))


def _table_aus(table: str, emotion: str) -> set:
    return set().union(*(recipe.aus() for recipe in TABLES[table][emotion]))


def test_the_default_is_the_emfacs_prototype_draw_for_draw():
    assert DEFAULTS["au_tables"] == ["emfacs"] and not any(OFF[k] for k in OFF if k != "extra_au_weight")
    style = _realiser()
    for emotion in (*EMOTIONS, "embarrassment", "pain", "contempt"):
        a, b = np.random.default_rng(7), np.random.default_rng(7)
        assert style.weights(emotion, 0.8, a, jitter=0.2) == expression_weights(emotion, 0.8, b, jitter=0.2)
        assert a.random() == b.random()
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    np.testing.assert_array_equal(style.profile(20, a, "posed"), temporal_profile(20, b, "posed"))


@pytest.mark.parametrize("table", sorted(TABLES))
@pytest.mark.parametrize("emotion", EMOTIONS)
def test_a_sample_uses_only_its_tables_units_plus_one_stray(table, emotion):
    allowed = _table_aus(table, emotion)
    style = _realiser((table,))
    rng = np.random.default_rng(1)
    outside_counts = []
    for _ in range(300):
        weights = style.weights(emotion, 1.0, rng, jitter=0.2)
        outside = set(weights) - allowed
        assert len(outside) <= 1 and outside <= set(STRAY_CANDIDATES)  # the stated stray AU
        outside_counts.append(len(outside))
        assert weights
    assert 0.2 < np.mean(outside_counts) < 0.5  # the stray comes in about half of the samples (less when it hits a recipe AU)


def test_du2014_keeps_its_core_units_and_adds_the_others_at_their_reported_rates():
    rng = np.random.default_rng(2)
    recipe = TABLES["du2014"]["sadness"][0]
    draws = [resolve(recipe, rng) for _ in range(N)]
    assert all({4, 15} <= set(d) for d in draws)
    for au, (rate, _) in recipe.optional.items():
        assert np.mean([au in d for d in draws]) == pytest.approx(rate, abs=0.03), au


def test_facs_guide_draws_its_alternatives_and_variants():
    rng = np.random.default_rng(4)
    anger = [resolve(TABLES["facs_guide"]["anger"][int(rng.integers(12))], rng) for _ in range(N)]
    assert any(4 not in d for d in anger) and any(5 not in d for d in anger)  # a variant without one of 4, 5, 7, 10
    assert all(len({4, 5, 7} - set(d)) <= 1 for d in anger)
    fear = [resolve(recipe, rng) for recipe in TABLES["facs_guide"]["fear"] for _ in range(200)]
    assert {frozenset(set(d) & {25, 26, 27}) for d in fear} >= {frozenset({25}), frozenset({26}), frozenset({27})}
    assert any({"L20", "R20"} & set(d) for d in fear)


def test_the_tables_realise_emotions_differently():
    assert 16 in _table_aus("emfacs", "disgust") and 16 not in _table_aus("du2014", "disgust")
    assert 25 not in _table_aus("facs_guide", "surprise") and 25 in _table_aus("du2014", "surprise")
    assert _table_aus("du2014", "anger") != _table_aus("emfacs", "anger")


def test_several_tables_share_the_samples_and_uncovered_expressions_use_emfacs():
    style = _realiser(("facs_guide", "du2014"))
    rng = np.random.default_rng(5)
    with_25 = [25 in style.weights("surprise", 1.0, rng, jitter=0.0) for _ in range(2000)]
    assert 0.4 < np.mean(with_25) < 0.65  # du2014's surprise always parts the lips, the guide's never (but a stray)
    assert recipes_for("pain", ["du2014"]) == [("emfacs", TABLES["emfacs"]["pain"])]
    with pytest.raises(ValueError, match="unknown AU tables \\['ekman'\\]"):
        recipes_for("anger", ["ekman"])


def test_au_dropout_leaves_out_units_at_the_set_rate_but_never_all():
    style = _realiser(au_dropout=0.3)
    rng = np.random.default_rng(6)
    core = set(PROTOTYPES["anger"])
    kept = []
    for _ in range(N):
        weights = style.weights("anger", 1.0, rng, jitter=0.0)
        assert weights
        kept.append(len(core & set(weights)) / len(core))
    assert np.mean(kept) == pytest.approx(0.7, abs=0.02)


def test_extra_co_activation_adds_an_outside_unit_up_to_the_set_weight():
    style = _realiser(extra_au_probability=1.0, extra_au_weight=0.4)
    rng = np.random.default_rng(8)
    core = set(PROTOTYPES["happiness"])
    for _ in range(500):
        weights = style.weights("happiness", 0.5, rng, jitter=0.0)
        outside = set(weights) - core
        assert 1 <= len(outside) <= 2  # the extra unit, and the stray when it came
        assert max(weights[key] for key in outside) <= 0.5 * max(0.4, 0.15) + 1e-12


def test_gains_belong_to_the_subject():
    rng = np.random.default_rng(9)
    one, other = _realiser(au_gain_sigma=0.3, seed=1), _realiser(au_gain_sigma=0.3, seed=2)
    first, second = (one.weights("surprise", 1.0, rng, jitter=0.0) for _ in range(2))
    shared = set(PROTOTYPES["surprise"])
    assert all(first[au] == pytest.approx(second[au]) for au in shared)  # the same face, the same gains
    assert any(abs(first[au] - other.weights("surprise", 1.0, rng, jitter=0.0).get(au, 0)) > 0.01 for au in shared)
    logs = np.log([g for seed in range(40) for g in _realiser(au_gain_sigma=0.3, seed=seed).gain.values()])
    assert logs.std() == pytest.approx(0.3, rel=0.1)


def test_asymmetry_splits_one_sided_capable_units_by_the_subjects_side_bias():
    for seed in range(20):
        style = _realiser(asymmetry=0.3, seed=seed)
        b = style.side_bias
        assert abs(b) <= 0.3
        weights = style.weights("happiness", 1.0, np.random.default_rng(0), jitter=0.0)
        plain = _realiser().weights("happiness", 1.0, np.random.default_rng(0), jitter=0.0)
        assert weights["L12"] == pytest.approx(plain[12] * (1 + b)) and weights["R12"] == pytest.approx(plain[12] * (1 - b))
        assert weights[25] == pytest.approx(plain[25])  # lips part as one
        assert all(parse_unit(key)[1] or parse_unit(key)[0] in (25, 26, 27, 17, 23, 24, 43, 45) for key in weights)


def test_timing_warps_the_profile_per_subject():
    apexes = []
    for seed in range(20):
        style = _realiser(timing_sigma=0.4, seed=seed)
        strength = style.profile(40, np.random.default_rng(0), "posed")
        assert strength[0] == 0 and strength[-1] == 0 and strength.max() == pytest.approx(1.0, abs=0.05)
        apexes.append(int(np.argmax(strength)))
    assert len(set(apexes)) > 3  # subjects reach the apex at different times


def test_tables_and_variation_reach_the_written_scans(tmp_path):
    settings = {"seed": 1, "resolution": 20, "texture_size": 16, "subjects": {"bu3dfe": 1}}
    generate("bu3dfe", tmp_path / "a", settings)
    generate("bu3dfe", tmp_path / "b", {**settings, "au_tables": ["du2014"], "variation": {"asymmetry": 0.3}})
    generate("bu3dfe", tmp_path / "c", {**settings, "au_tables": ["du2014"], "variation": {"asymmetry": 0.3}})
    scan = "F0001/F0001_HA04{race}_F3D.wrl"
    (path_a,) = (tmp_path / "a").glob(scan.format(race="*"))
    rel = path_a.relative_to(tmp_path / "a")
    assert (tmp_path / "b" / rel).read_bytes() != path_a.read_bytes()
    assert (tmp_path / "b" / rel).read_bytes() == (tmp_path / "c" / rel).read_bytes()


@pytest.mark.parametrize("settings, message", [
    ({"au_tables": ["ekman"]}, "synthetic.au_tables \\['ekman'\\]: choose one or more of emfacs, facs_guide, du2014"),
    ({"au_tables": []}, "synthetic.au_tables \\[\\]"),
    ({"head_motion": {"kind": "shake"}}, "synthetic.head_motion.kind 'shake': choose one of drift, drift_noise, jitter"),
])
def test_a_bad_choice_is_refused_before_anything_is_written(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        generate("bu4dfe", tmp_path / "out", settings)
    assert not (tmp_path / "out").exists()
