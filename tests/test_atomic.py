import pytest

from smile_vlm.atomic import atomic_path, write_json, write_text


def test_file_appears_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []  # no target, no temp sibling
    write_text(target, "done")
    assert target.read_text() == "done"


def test_directory_replaces_previous_version_whole(tmp_path):
    target = tmp_path / "store.zarr"
    target.mkdir()
    (target / "stale").write_text("old run")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "fresh").write_text("new run")
    assert sorted(p.name for p in target.iterdir()) == ["fresh"]
    with pytest.raises(KeyError):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            raise KeyError("interrupted")
    # the complete earlier version survives an interrupted rewrite
    assert sorted(p.name for p in target.iterdir()) == ["fresh"]
    assert [p.name for p in tmp_path.iterdir()] == ["store.zarr"]


def test_write_json_handles_numpy(tmp_path):
    import json

    import numpy as np

    write_json(tmp_path / "a.json", {"x": np.float32(0.5), "y": np.arange(3)})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 0.5, "y": [0, 1, 2]}
