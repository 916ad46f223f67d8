"""The views of a render, defined once: which (yaw, pitch) pairs, in which order, and their names.

A view is ``{"yaw": degrees, "pitch": degrees}``: yaw +θ orbits the camera θ degrees toward the
subject's left, pitch +φ raises it (render.view_rotation). Render draws them ``for pitch in
pitches: for yaw in yaws``; the store records that list in its ``views`` attribute, and
evaluation, figures and the contact sheet name them with ``view_name``. Plain Python only: the
workflow imports this while it builds the DAG.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping



def render_views(render: Mapping) -> list[dict]:
    """Every view of the (complete) render settings ``render`` (``yaws``, ``pitches``), in render's order.

    The angles are kept as given (a config's ``30`` stays an int), so the store's ``views``
    attribute and the pack rule's params read exactly as they always did.
    """
    return [{"yaw": yaw, "pitch": pitch} for pitch in render["pitches"] for yaw in render["yaws"]]


def view_name(view, degrees: bool = False) -> str:
    """``{"yaw": -30, "pitch": 0}`` -> ``"yaw -30"``; a non-zero pitch adds ``" pitch +10"``.

    Signed, so the front view reads ``"yaw +0"``: the names of the tables' single-view rows.
    ``degrees=True`` gives the figures' axis labels, ``"yaw -30°"`` and ``"yaw -30°, pitch +10°"``.
    A view that is already a name (a string) passes through. SMILE-VLM's Table V left profile
    is yaw -30, front yaw 0, right yaw +30.
    """
    if not isinstance(view, Mapping):
        return str(view)
    unit, separator = ("°", ", ") if degrees else ("", " ")
    name = f"yaw {float(view.get('yaw', 0)):+g}{unit}"
    if float(view.get("pitch", 0)):
        name += f"{separator}pitch {float(view['pitch']):+g}{unit}"
    return name


def view_names(views: Iterable) -> list[str]:
    """``view_name`` of each view, made unique (``" #<position>"`` added to a repeated name)."""
    names: list[str] = []
    for view in views:
        name = view_name(view)
        names.append(name if name not in names else f"{name} #{len(names)}")
    return names
