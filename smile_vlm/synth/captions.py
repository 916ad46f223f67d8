"""Captions of generated faces, written from what the generator applied.

A caption names every visible FACS action unit in words with its intensity on the FACS A-E
scale and, for a one-sided AU, its side (``"L12"``: the subject's left; ``smile_vlm.synth.units``) (Ekman, Friesen & Hager, *Facial Action Coding System*, 2002: A trace, B slight,
C marked, D severe, E maximum), and the EMFACS emotion when the active AUs contain exactly one
emotion prototype (Friesen & Ekman, *EMFACS-7*, 1983; the prototype table of
https://en.wikipedia.org/wiki/Facial_Action_Coding_System). All functions are pure.
"""

from __future__ import annotations

from collections.abc import Mapping

from smile_vlm.synth.units import SIDES, parse_unit, unit_key, unit_order

# FACS names of the action units the generator models (smile_vlm.synth.expressions.ACTION_UNITS).
AU_NAMES: dict[int, str] = {
    1: "inner brow raiser", 2: "outer brow raiser", 4: "brow lowerer", 5: "upper lid raiser",
    6: "cheek raiser", 7: "lid tightener", 9: "nose wrinkler", 10: "upper lip raiser",
    12: "lip corner puller", 14: "dimpler", 15: "lip corner depressor", 16: "lower lip depressor",
    17: "chin raiser", 20: "lip stretcher", 23: "lip tightener", 24: "lip pressor", 25: "lips part",
    26: "jaw drop", 27: "mouth stretch", 43: "eyes closed", 45: "blink",
}

# FACS intensity letters with their words; a weight w in [0, 1] falls in letter k when
# w >= INTENSITY_THRESHOLDS[k] (upper bounds of A..D at 0.3, 0.5, 0.7, 0.9).
INTENSITY_WORDS = {"A": "trace", "B": "slight", "C": "marked", "D": "severe", "E": "maximum"}
INTENSITY_THRESHOLDS = {"A": 0.1, "B": 0.3, "C": 0.5, "D": 0.7, "E": 0.9}
VISIBLE_WEIGHT = INTENSITY_THRESHOLDS["A"]  # weaker AUs are not mentioned

# EMFACS prototypes: the AUs that must all be present for the emotion. Contempt is one-sided
# (R12A+R14A) and shows on either side: its alternatives are in EMFACS_MIRRORED.
EMFACS_PROTOTYPES: dict[str, frozenset] = {
    "happiness": frozenset({6, 12}),
    "sadness": frozenset({1, 4, 15}),
    "surprise": frozenset({1, 2, 5, 26}),
    "fear": frozenset({1, 2, 4, 5, 7, 20, 26}),
    "anger": frozenset({4, 5, 7, 23}),
    "disgust": frozenset({9, 15, 16}),
    "contempt": frozenset({"R12", "R14"}),
}
EMFACS_MIRRORED = {"contempt": frozenset({"L12", "L14"})}

EMOTION_ADJECTIVES = {"happiness": "happy", "sadness": "sad", "surprise": "surprised", "fear": "fearful",
                      "anger": "angry", "disgust": "disgusted", "contempt": "contemptuous"}


def intensity_letter(weight: float) -> str | None:
    """The FACS intensity letter of an AU weight (None below the trace level)."""
    letter = None
    for candidate, threshold in INTENSITY_THRESHOLDS.items():
        if weight >= threshold:
            letter = candidate
    return letter


def active_units(au_weights: Mapping, min_weight: float = VISIBLE_WEIGHT) -> dict:
    """The AUs at or above ``min_weight`` (keys as ``units.unit_key``), by AU number then side;
    unknown AU numbers are refused."""
    unknown = sorted({parse_unit(key)[0] for key in au_weights} - set(AU_NAMES))
    if unknown:
        raise ValueError(f"no FACS name for action units {unknown}; known: {sorted(AU_NAMES)}")
    return {unit_key(*parse_unit(key)): float(w) for key, w in sorted(au_weights.items(), key=lambda item: unit_order(item[0]))
            if float(w) >= min_weight}


def emfacs_emotion(aus) -> str | None:
    """The EMFACS emotion whose prototype the AU set contains, or None.

    When several prototypes are contained, the one that contains all the others wins (fear holds
    surprise's 1+2+5+26); two unrelated prototypes at once (a blend) give None. A one-sided AU
    counts only for one-sided prototypes (L12 is no half of happiness's 12).
    """
    present = {unit_key(*parse_unit(key)) for key in aus}
    matches = {}
    for name, prototype in EMFACS_PROTOTYPES.items():
        for form in (prototype, EMFACS_MIRRORED.get(name)):
            if form is not None and form <= present:
                matches[name] = form
    widest = [name for name, form in matches.items() if all(other <= form for other in matches.values())]
    return widest[0] if len(widest) == 1 else None


def describe_unit(key, weight: float) -> str:
    """E.g. ``"marked lip corner puller (AU12)"``, ``"slight left dimpler (L14)"``."""
    au, side = parse_unit(key)
    letter = intensity_letter(weight)
    if letter is None:
        raise ValueError(f"AU{au} weight {weight:.3f} is below the trace level {VISIBLE_WEIGHT}")
    if side is None:
        return f"{INTENSITY_WORDS[letter]} {AU_NAMES[au]} (AU{au})"
    return f"{INTENSITY_WORDS[letter]} {SIDES[side]} {AU_NAMES[au]} ({side}{au})"


def _join(parts: list[str]) -> str:
    if len(parts) <= 2:
        return " and ".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def caption(au_weights: Mapping, dynamic: bool = False, with_emotion: bool = True, emotion: str | None = None) -> str:
    """One sentence for a face showing ``au_weights`` (AU key -> weight, 1 = full activation).

    ``dynamic``: the caption of a sequence moving to these weights at its apex. ``with_emotion``:
    name the EMFACS emotion the AUs contain. ``emotion``: name this emotion instead, the one the
    face was made to show (any AU table's realisation of it, e.g. ``": a sad face."``).
    """
    if emotion is not None and emotion not in EMOTION_ADJECTIVES:
        raise ValueError(f"no words for the emotion {emotion!r}; known: {', '.join(EMOTION_ADJECTIVES)}")
    active = active_units(au_weights)
    subject = "a 3D face sequence" if dynamic else "a 3D face"
    if not active:
        return f"{subject} with a neutral expression, no action units."
    verb = "moving into" if dynamic else "showing"
    text = f"{subject} {verb} {_join([describe_unit(au, w) for au, w in active.items()])}"
    prototype = emfacs_emotion(active) if with_emotion and emotion is None else None
    named = emotion or prototype
    if named:
        adjective = EMOTION_ADJECTIVES[named]
        article = "an" if adjective[0] in "aeiou" else "a"
        text += f": {article} {adjective} face"
    if prototype:
        text += f", the EMFACS prototype of {prototype}"
    return text + "."


def named_emotion(text: str) -> str | None:
    """The emotion a caption of ``caption`` names (its ``": a happy face"``), or None."""
    for emotion, adjective in EMOTION_ADJECTIVES.items():
        article = "an" if adjective[0] in "aeiou" else "a"
        if f": {article} {adjective} face" in text:
            return emotion
    return None
