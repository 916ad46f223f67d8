"""Views, defined once: their order (render's), their angles as configured, their names."""

from pathlib import Path

import yaml

from smile_vlm.settings import DEFAULT_RENDER
from smile_vlm.views import render_views, view_name, view_names

REPO = Path(__file__).resolve().parents[1]


def test_views_are_every_pitch_yaw_pair_pitch_major():
    views = render_views({"yaws": [0, -30, 30], "pitches": [0, 15]})
    assert views == [{"yaw": 0, "pitch": 0}, {"yaw": -30, "pitch": 0}, {"yaw": 30, "pitch": 0},
                     {"yaw": 0, "pitch": 15}, {"yaw": -30, "pitch": 15}, {"yaw": 30, "pitch": 15}]
    # angles as configured: an int stays an int, so the store attrs and pack params never change
    assert [type(v["yaw"]) for v in views] == [int] * 6
    assert list(views[0]) == ["yaw", "pitch"]


def test_defaults_are_the_schemas():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    render = schema["properties"]["render"]["properties"]
    assert DEFAULT_RENDER["yaws"] == render["yaws"]["default"]
    assert DEFAULT_RENDER["pitches"] == render["pitches"]["default"]
    assert render_views(DEFAULT_RENDER) == [{"yaw": 0, "pitch": 0}, {"yaw": -30, "pitch": 0}, {"yaw": 30, "pitch": 0}]


def test_view_names_of_tables_and_figures():
    assert view_names(render_views(DEFAULT_RENDER)) == ["yaw +0", "yaw -30", "yaw +30"]
    assert view_name({"yaw": -30.0, "pitch": 15}) == "yaw -30 pitch +15"
    assert view_name({"yaw": 30, "pitch": 0}, degrees=True) == "yaw +30°"
    assert view_name({"yaw": 30.0, "pitch": 15}, degrees=True) == "yaw +30°, pitch +15°"
    assert view_name("yaw -30") == "yaw -30"  # a name passes through
    # a repeated view keeps a unique name (single-view rows and weights are keyed by it)
    assert view_names([{"yaw": 0, "pitch": 0}, {"yaw": 0.0, "pitch": 0}]) == ["yaw +0", "yaw +0 #1"]
