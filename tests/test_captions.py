"""Captions written from the generator's action units (smile_vlm.synth.captions)."""

import numpy as np
import pytest

from smile_vlm.synth import captions
from smile_vlm.synth.expressions import ACTION_UNITS, EMOTIONS, PROTOTYPES, expression_weights


def test_every_generated_action_unit_has_a_name():
    assert set(ACTION_UNITS) <= set(captions.AU_NAMES)


@pytest.mark.parametrize("weight, letter", [(0.05, None), (0.1, "A"), (0.29, "A"), (0.3, "B"), (0.55, "C"),
                                            (0.75, "D"), (0.95, "E"), (1.3, "E")])
def test_intensity_letters(weight, letter):
    assert captions.intensity_letter(weight) == letter


def test_caption_names_units_in_order_with_intensity():
    text = captions.caption({12: 0.8, 6: 0.4})
    assert text == ("a 3D face showing slight cheek raiser (AU6) and severe lip corner puller (AU12): "
                    "a happy face, the EMFACS prototype of happiness.")


def test_caption_drops_invisible_units_and_neutral():
    assert "AU9" not in captions.caption({12: 0.6, 9: 0.05})
    assert captions.caption({}) == "a 3D face with a neutral expression, no action units."
    assert captions.caption({4: 0.02}) == captions.caption({})


def test_dynamic_caption_and_emotion_switch():
    text = captions.caption({1: 1.0, 2: 1.0, 5: 1.0, 26: 1.0}, dynamic=True)
    assert text.startswith("a 3D face sequence moving into maximum inner brow raiser (AU1), ")
    assert text.endswith(": a surprised face, the EMFACS prototype of surprise.")
    assert captions.caption({4: 1.0, 5: 1.0, 7: 1.0, 23: 1.0}).endswith(": an angry face, the EMFACS prototype of anger.")
    assert "surprise" not in captions.caption({1: 1.0, 2: 1.0, 5: 1.0, 26: 1.0}, with_emotion=False)


def test_emfacs_prefers_the_prototype_that_contains_the_others():
    assert captions.emfacs_emotion({1, 2, 4, 5, 7, 20, 26}) == "fear"  # holds surprise and anger cores
    assert captions.emfacs_emotion({1, 2, 5, 26}) == "surprise"
    assert captions.emfacs_emotion({6, 12, 1, 4, 15}) is None  # a blend of two prototypes
    assert captions.emfacs_emotion({12}) is None
    assert captions.emfacs_emotion(set()) is None


@pytest.mark.parametrize("emotion", EMOTIONS)
def test_generator_prototypes_at_full_intensity_read_as_their_emotion(emotion):
    weights = expression_weights(emotion, 1.0, np.random.default_rng(0), jitter=0.0, leak=0.0)
    assert captions.emfacs_emotion(captions.active_units(weights)) == emotion
    assert captions.EMFACS_PROTOTYPES[emotion] <= set(PROTOTYPES[emotion])


def test_unknown_action_unit_is_refused():
    with pytest.raises(ValueError, match="no FACS name for action units \\[99\\]"):
        captions.caption({99: 1.0})
