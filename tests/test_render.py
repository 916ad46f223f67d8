"""Offscreen rendering with pyrender (OSMesa by default, or whatever PYOPENGL_PLATFORM says)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import trimesh
from PIL import Image

from smile_vlm.dynamic import approximate_rank_pooling, to_uint8
from smile_vlm.errors import ScanError
from smile_vlm.mesh import Mesh
from smile_vlm import renderer as renderer_module
from smile_vlm.render import Renderer, render_shard, select_gl_platform, split_by_uv, view_rotation
from smile_vlm.settings import complete

SIZE = 224
DISTANCE = 4.0


@pytest.fixture(scope="module")
def depth_renderer():
    with Renderer(complete("render", {"mode": "depth", "size": SIZE, "camera_distance": DISTANCE})) as renderer:
        yield renderer


@pytest.fixture(scope="module")
def shaded_renderer():
    with Renderer(complete("render", {"mode": "shaded", "size": SIZE, "camera_distance": DISTANCE})) as renderer:
        yield renderer


def sphere(radius=0.5, centre=(0.0, 0.0, 0.0)) -> Mesh:
    shape = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    return Mesh(shape.vertices + np.asarray(centre), shape.faces)


def expected_disc_area(radius, distance):
    """Silhouette of a sphere seen in perspective, in pixels, when the unit sphere fills the frame."""
    half_fov = np.arcsin(1.0 / DISTANCE)
    pixel_radius = np.tan(np.arcsin(radius / distance)) / np.tan(half_fov) * SIZE / 2
    return np.pi * pixel_radius**2


def test_sphere_silhouette_area_and_centre_depth(depth_renderer):
    images = depth_renderer.render(sphere(0.5))
    assert images.shape == (3, SIZE, SIZE, 3) and images.dtype == np.uint8
    foreground = images[0, :, :, 0] > 0
    assert foreground.sum() == pytest.approx(expected_disc_area(0.5, DISTANCE), rel=0.02)
    # front pole at eye depth 3.5 inside the fixed range [3, 5]: 1 + 254 * (5 - 3.5) / 2 = 191.5
    assert abs(int(images[0, SIZE // 2, SIZE // 2, 0]) - 191.5) <= 1
    assert np.all(images[..., 0] == images[..., 1]) and np.all(images[..., 0] == images[..., 2])
    # a sphere looks the same from every yaw
    assert np.mean(images[1] != images[0]) < 0.01


def test_views_follow_yaw_sign_convention(depth_renderer):
    # a ball on the subject's left (+x): right half of the image at yaw 0, nearer at yaw +30
    front, minus_30, plus_30 = depth_renderer.render(sphere(0.2, centre=(0.6, 0.0, 0.0)))
    columns = np.nonzero(front[:, :, 0] > 0)[1]
    assert columns.min() > SIZE // 2
    assert plus_30[..., 0].max() > front[..., 0].max() > minus_30[..., 0].max()


def face_like_wedge() -> Mesh:
    """Mirror-symmetric in x but not in z: a disc with a nose-like pyramid pointing at +z."""
    ring = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    rim = np.stack([0.8 * np.cos(ring), 0.8 * np.sin(ring), np.full_like(ring, -0.6)], 1)
    centre = [[0.0, 0.0, -0.6]]
    nose = np.array([[-0.15, -0.1, -0.6], [0.15, -0.1, -0.6], [0.0, 0.3, -0.6], [0.0, 0.0, 0.0]])
    vertices = np.concatenate([rim, centre, nose])
    disc = [[48, i, (i + 1) % 48] for i in range(48)]
    pyramid = [[49, 50, 52], [50, 51, 52], [51, 49, 52]]
    return Mesh(vertices, disc + pyramid)


def test_opposite_yaws_mirror_each_other(depth_renderer):
    # depth only: the shaded light comes from the upper left, so shaded views are not mirrors
    mesh = face_like_wedge()
    for renderer in (depth_renderer,):
        front, minus_30, plus_30 = renderer.render(mesh).astype(int)
        assert np.mean(np.abs(plus_30 - minus_30) > 2) > 0.05  # the two views really differ
        mirrored = plus_30[:, ::-1]
        assert np.mean(np.abs(mirrored - minus_30) > 2) < 0.005
        assert np.mean(np.abs(front[:, ::-1] - front) > 2) < 0.005


def test_shaded_light_is_on(shaded_renderer):
    image = shaded_renderer.render(sphere(0.5))[0].astype(int)
    foreground = image[..., 0][image[..., 0] > 0]
    # with the light off (integer colours) the sphere would be one flat ambient grey
    assert foreground.max() > 200 and foreground.max() - foreground.min() > 40
    # the light comes from the upper left: that quadrant of the sphere is the brighter one
    half = SIZE // 2
    upper_left = image[half - 20:half - 5, half - 20:half - 5, 0].mean()
    lower_right = image[half + 5:half + 20, half + 5:half + 20, 0].mean()
    assert upper_left > lower_right + 10
    assert image[0, 0].tolist() == [0, 0, 0]  # black background


def test_one_offscreen_renderer_is_reused(shaded_renderer):
    shaded_renderer.render(sphere(0.3))
    first = shaded_renderer.offscreen
    shaded_renderer.render(sphere(0.6))
    assert shaded_renderer.offscreen is first
    # the mesh node is removed after its views: the scene never accumulates meshes
    assert len(shaded_renderer._scene.mesh_nodes) == 0


def quadrant_texture(path: Path) -> Path:
    """Top-left red, top-right green, bottom-left blue, bottom-right white."""
    image = np.zeros((64, 64, 3), np.uint8)
    image[:32, :32] = [255, 0, 0]
    image[:32, 32:] = [0, 255, 0]
    image[32:, :32] = [0, 0, 255]
    image[32:, 32:] = [255, 255, 255]
    Image.fromarray(image).save(path)
    return path


def textured_square(texture: Path) -> Mesh:
    vertices = np.array([[-0.6, -0.6, 0.0], [0.6, -0.6, 0.0], [0.6, 0.6, 0.0], [-0.6, 0.6, 0.0]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    # per-corner UVs (bottom-left origin), stored as six separate entries like BU-3DFE
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 0], [1, 1], [0, 1]], dtype=float)
    return Mesh(vertices, faces, uv=uv, face_uv=[[0, 1, 2], [3, 4, 5]], texture=texture)


def test_textured_mode_shows_texture_colours(tmp_path):
    mesh = textured_square(quadrant_texture(tmp_path / "tex.png"))
    with Renderer(complete("render", {"mode": "textured", "yaws": [0]})) as renderer:
        image = renderer.render(mesh)[0]
        assert renderer.last_mode == "textured"
    quarter, three_quarters = SIZE // 2 - 20, SIZE // 2 + 20
    assert image[quarter, quarter].tolist() == [255, 0, 0]
    assert image[quarter, three_quarters].tolist() == [0, 255, 0]
    assert image[three_quarters, quarter].tolist() == [0, 0, 255]
    assert image[three_quarters, three_quarters].tolist() == [255, 255, 255]


def test_textured_mode_falls_back_to_shaded_without_texture(shaded_renderer):
    mesh = sphere(0.5)
    with Renderer(complete("render", {"mode": "textured"})) as renderer:
        images = renderer.render(mesh)
        assert renderer.last_mode == "shaded"
    np.testing.assert_array_equal(images, shaded_renderer.render(mesh))


def test_unreadable_texture_is_a_scan_error(tmp_path):
    bad = tmp_path / "tex.png"
    bad.write_bytes(b"not a png")
    with Renderer(complete("render", {"mode": "textured", "yaws": [0]})) as renderer:
        with pytest.raises(ScanError) as info:
            renderer.render(textured_square(bad))
    assert info.value.path == str(bad)


def test_split_by_uv_makes_one_vertex_per_distinct_corner():
    mesh = Mesh(
        np.zeros((4, 3)),
        [[0, 1, 2], [0, 2, 3]],
        uv=np.zeros((5, 2)),
        face_uv=[[0, 1, 2], [4, 2, 3]],  # vertex 0 has two UVs, vertex 2 shares uv 2
    )
    vertex_ids, uv_ids, faces = split_by_uv(mesh)
    assert len(vertex_ids) == 5
    np.testing.assert_array_equal(vertex_ids[faces], mesh.faces)
    np.testing.assert_array_equal(uv_ids[faces], mesh.face_uv)


def test_view_rotation_orders_pitch_then_yaw():
    renderer_views = Renderer(complete("render", {"yaws": [0, 30], "pitches": [0, 15]})).views
    assert renderer_views == [(0, 0), (30, 0), (0, 15), (30, 15)]
    # pitch +15 raises the camera: a point above the origin comes toward it
    lifted = view_rotation(0, 15) @ [0.0, 1.0, 0.0, 1.0]
    assert lifted[2] > 0


# ---------------------------------------------------------------- render_shard


def read_mesh_for_tests(path):
    """The project's reader when it exists; else trimesh (a local fallback for these tests only)."""
    try:
        from smile_vlm.readers import read_mesh
    except ImportError:
        shape = trimesh.load(path, process=False, force="mesh")
        if not isinstance(shape, trimesh.Trimesh) or len(shape.faces) == 0:
            raise ScanError(path, "no triangles")
        return Mesh(shape.vertices, shape.faces, source=Path(path))
    return read_mesh(path)


def write_ball(path: Path, radius_mm: float) -> str:
    trimesh.creation.icosphere(subdivisions=3, radius=radius_mm).export(path)
    return str(path)


def manifest_row(sample_id, subject, frame, mesh_path, sequence=""):
    return {
        "dataset": "toy", "sample_id": sample_id, "subject": subject, "sequence": sequence,
        "frame": frame, "label": "happiness", "labels": "happiness", "intensity": -1,
        "mesh_path": mesh_path, "texture_path": "", "landmark_path": "", "task": "", "sex": "",
        "race": "", "onset": "", "apex": "", "offset": "", "aus": "",
    }


def test_render_shard_static_and_4d(tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    rows = [manifest_row("S1_static", "S1", 0, write_ball(scans / "static.obj", 40.0))]
    for frame in range(6):  # a ball that grows over the sequence; frame 3 is broken
        path = scans / f"seq_{frame:03d}.obj"
        if frame == 3:
            path.write_text("v 0 0 0\nf 1 2 3\n")
            mesh_path = str(path)
        else:
            mesh_path = write_ball(path, 30.0 + 8.0 * frame)
        rows.append(manifest_row("S1_grow", "S1", frame, mesh_path, sequence="grow"))
    rows.append(manifest_row("S2_static", "S2", 0, str(scans / "absent.obj")))  # another subject
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(rows).sample(frac=1.0, random_state=0).to_csv(manifest, index=False)  # any row order

    read_paths = []

    def reader(path):
        read_paths.append(Path(path).name)
        return read_mesh_for_tests(path)

    out_dir = tmp_path / "out"
    settings = {"mode": "depth", "frames": 4, "keep_frames": True, "radius_mm": 90.0, "registration": "none"}
    render_shard(manifest, "toy", "S1", out_dir, complete("render", settings), mesh_reader=reader)

    # 4 of 6 frames are sampled (0, 2, 3, 5) BEFORE anything is read; frames 1 and 4 never are.
    # Each is read once: the nose-tip pass keeps the parsed meshes for the render pass.
    assert sorted(read_paths) == ["seq_000.obj", "seq_002.obj", "seq_003.obj", "seq_005.obj", "static.obj"]
    rejects = pd.read_csv(out_dir / "rejects.csv")
    assert rejects["path"].tolist() == [str(scans / "seq_003.obj")]
    assert rejects["reason"].str.len().min() > 0

    index = pd.read_csv(out_dir / "index.csv").set_index("sample_id")
    assert sorted(index.index) == ["S1_grow", "S1_static"]
    assert index.loc["S1_grow", "n_frames"] == 3 and index.loc["S1_static", "n_frames"] == 1
    for sample_id in ("S1_static", "S1_grow"):
        images = index.loc[sample_id, "images"].split("|")
        assert images == [str(out_dir / f"{sample_id}_v{view}.png") for view in range(3)]
    static_front = np.asarray(Image.open(out_dir / "S1_static_v0.png"))
    # the nose tip sits at the origin, eye depth 4 in the range [3, 5]: 1 + 254 * 0.5 = 128
    assert static_front.shape == (224, 224, 3) and abs(int(static_front.max()) - 128) <= 1

    # each dynamic image is the rank-pooled (kept) frame renders of its view
    for view in range(3):
        frames = np.stack(
            [np.asarray(Image.open(out_dir / f"S1_grow_f{frame}_v{view}.png")) for frame in (0, 2, 5)]
        )
        expected = to_uint8(approximate_rank_pooling(frames))
        np.testing.assert_array_equal(np.asarray(Image.open(out_dir / f"S1_grow_v{view}.png")), expected)
    assert not (out_dir / "S1_grow_f3_v0.png").exists() and not (out_dir / "S1_grow_f1_v0.png").exists()
    assert not (out_dir / "S2_static_v0.png").exists()


def test_render_shard_without_frames_keeps_only_dynamic_images(tmp_path):
    rows = [
        manifest_row("A_seq", "A", frame, write_ball(tmp_path / f"f{frame}.obj", 30.0 + 5.0 * frame), "seq")
        for frame in range(3)
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    out_dir = tmp_path / "out"
    settings = {"yaws": [0], "size": 48, "registration": "none"}  # the pipeline's config key for the image side
    render_shard(tmp_path / "manifest.csv", "toy", "A", out_dir, complete("render", settings), mesh_reader=read_mesh_for_tests)
    assert sorted(p.name for p in out_dir.iterdir()) == ["A_seq_v0.png", "index.csv", "rejects.csv"]
    dynamic = np.asarray(Image.open(out_dir / "A_seq_v0.png"))
    assert dynamic.shape == (48, 48, 3)
    assert dynamic.min() == 0 and dynamic.max() == 255
    assert pd.read_csv(out_dir / "rejects.csv").empty


def test_render_shard_centres_on_the_lm3_nose_tip(tmp_path):
    pytest.importorskip("smile_vlm.readers.bosphorus")
    mesh_path = write_ball(tmp_path / "bs000_N_N_0.obj", 40.0)
    landmarks = tmp_path / "bs000_N_N_0.lm3"
    # Bosphorus layout (CRLF); the "nose tip" is put on the ball's BACK pole on purpose
    landmarks.write_bytes(
        b"# 3D Landmark File\r\n\r\n2 landmarks:\r\nChin middle\r\n0 -40 0\r\nNose tip\r\n0 0 -40\r\n"
    )
    row = manifest_row("bs000_N_N_0", "bs000", 0, mesh_path) | {"landmark_path": str(landmarks)}
    pd.DataFrame([row]).to_csv(tmp_path / "manifest.csv", index=False)
    render_shard(tmp_path / "manifest.csv", "toy", "bs000", tmp_path / "out", complete("render", {"mode": "depth", "yaws": [0]}))
    front = np.asarray(Image.open(tmp_path / "out" / "bs000_N_N_0_v0.png"))
    # the front pole now sits 80/90 in front of the origin: eye depth 4 - 0.889, so
    # 1 + 254 * (5 - 3.111) / 2 = 240.9 (it would be 128 with the geometric nose tip)
    assert abs(int(front.max()) - 241) <= 1


def scans_of_two_sequences(tmp_path: Path) -> Path:
    """A manifest of one subject: a static scan and two 5-frame sequences of growing balls (a ball
    has no pose to register: these sequences are rendered with registration none)."""
    scans = tmp_path / "scans"
    scans.mkdir()
    rows = [manifest_row("S1_static", "S1", 0, write_ball(scans / "static.obj", 40.0))]
    for sequence in ("grow", "wide"):
        rows += [manifest_row(f"S1_{sequence}", "S1", f, write_ball(scans / f"{sequence}_{f}.obj", 30.0 + 5.0 * f),
                              sequence=sequence) for f in range(5)]
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def test_render_shard_parses_each_frame_once_and_holds_one_sequence(tmp_path):
    """Every frame is read once; when a sample's first file is read, no mesh of an earlier sample
    is still alive (memory holds at most the parsed frames of one sequence)."""
    import gc
    import weakref

    manifest = scans_of_two_sequences(tmp_path)
    earlier: dict[str, list[weakref.ref]] = {}
    alive_at_read: list[int] = []
    read_paths: list[str] = []

    def reader(path):
        gc.collect()
        sample = Path(path).stem.split("_")[0]
        alive_at_read.append(sum(ref() is not None for key, refs in earlier.items() if key != sample for ref in refs))
        read_paths.append(Path(path).name)
        mesh = read_mesh_for_tests(path)
        earlier.setdefault(sample, []).append(weakref.ref(mesh))
        return mesh

    render_shard(manifest, "toy", "S1", tmp_path / "out", complete("render", {"mode": "depth", "frames": 5, "registration": "none"}), mesh_reader=reader)
    assert sorted(read_paths) == sorted(set(read_paths)) and len(read_paths) == 1 + 2 * 5
    assert alive_at_read == [0] * len(alive_at_read)


@pytest.mark.parametrize("mode", ["depth", "shaded"])
def test_frames_kept_in_memory_or_read_again_give_the_same_images(tmp_path, mode):
    """keep_parsed_mb only trades memory for a second read: with 0 every frame is read twice
    (nose-tip pass, render pass, as the job did before parsing once) and every file written is
    byte for byte the same."""
    manifest = scans_of_two_sequences(tmp_path)
    reads = {}
    settings = {"mode": mode, "frames": 4, "keep_frames": True, "size": 64, "nose_smoothing": 3, "registration": "none"}
    for keep_mb in (0, 0.08, 256):  # 0.08 MB holds two of the four 38 KB frames
        paths = reads.setdefault(keep_mb, [])

        def reader(path, paths=paths):
            paths.append(Path(path).name)
            return read_mesh_for_tests(path)

        render_shard(manifest, "toy", "S1", tmp_path / f"out{keep_mb}", complete("render", settings), mesh_reader=reader,
                     keep_parsed_mb=keep_mb)
    n_reads = {keep_mb: len(paths) for keep_mb, paths in reads.items()}
    assert n_reads == {0: 1 + 2 * 2 * 4, 0.08: 1 + 2 * 6, 256: 1 + 2 * 4}
    written = sorted(p.name for p in (tmp_path / "out0").iterdir())
    assert len([name for name in written if name.endswith(".png")]) == 3 * (1 + 2 + 2 * 4)
    for keep_mb in (0.08, 256):
        assert written == sorted(p.name for p in (tmp_path / f"out{keep_mb}").iterdir())
        for name in written:
            before, after = (tmp_path / "out0" / name).read_bytes(), (tmp_path / f"out{keep_mb}" / name).read_bytes()
            assert before.replace(b"out0", f"out{keep_mb}".encode()) == after, name


EGL_RENDER_SCRIPT = """
import sys
import numpy as np
import trimesh
from smile_vlm.mesh import Mesh
from smile_vlm.render import Renderer
from smile_vlm.settings import complete
shape = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
with Renderer(complete("render", {"backend": "egl", "mode": sys.argv[1], "size": 224, "camera_distance": 4.0})) as renderer:
    images = renderer.render(Mesh(shape.vertices, shape.faces))
    assert type(renderer.offscreen._platform).__name__ == "EGLPlatform", renderer.offscreen._platform
np.save(sys.argv[2], images)
"""


@pytest.mark.parametrize("mode", ["depth", "shaded"])
def test_egl_backend_renders_what_osmesa_renders(tmp_path, mode, depth_renderer, shaded_renderer):
    """The GPU path (EGL) runs on Mesa's software device too, so it is tested here on the CPU.

    PyOpenGL fixes its platform at first import and this process already uses OSMesa, so the
    EGL render runs in a fresh interpreter with PYOPENGL_PLATFORM unset (the setting decides).
    """
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYOPENGL_PLATFORM"}
    out = tmp_path / "egl.npy"
    result = subprocess.run(
        [sys.executable, "-c", EGL_RENDER_SCRIPT, mode, str(out)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    egl = np.load(out).astype(int)
    renderer = depth_renderer if mode == "depth" else shaded_renderer
    osmesa = renderer.render(sphere(0.5)).astype(int)
    assert egl.shape == osmesa.shape == (3, SIZE, SIZE, 3)
    assert (egl[0, ..., 0] > 0).sum() == pytest.approx(expected_disc_area(0.5, DISTANCE), rel=0.02)
    # Same shaders, same rasteriser: inside the silhouette the images agree closely. On the
    # one-pixel rim they may not (Mesa's EGL surface multisamples edges, OSMesa's does not).
    foreground = (egl[..., 0] > 0) | (osmesa[..., 0] > 0)
    background = ~foreground
    near_background = background.copy()
    for axis in (1, 2):
        for shift in (-1, 1):
            near_background |= np.roll(background, shift, axis=axis)
    interior = foreground & ~near_background
    assert interior.sum() > 0.9 * expected_disc_area(0.5, DISTANCE) * len(egl)
    # Depth buffers and edge sampling differ a little between the two surfaces: a few levels of
    # 255 at most (4 levels of depth are about 3 mm at the default 90 mm crop), rarely above 2.
    difference = np.abs(egl - osmesa)[interior]
    assert difference.max() <= 4
    assert np.mean(difference > 2) < 0.005
    assert difference.mean() < 0.5


@pytest.mark.parametrize("gpu, expected", [(True, "egl"), (False, "osmesa")])
def test_auto_backend_takes_egl_only_where_a_gpu_is(monkeypatch, gpu, expected):
    import sys

    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    monkeypatch.delitem(sys.modules, "OpenGL", raising=False)  # as in a fresh render job
    monkeypatch.setattr(renderer_module, "nvidia_gpu_present", lambda: gpu)
    assert select_gl_platform("auto") == expected
    # an exported platform wins over the setting, and an unknown one is refused
    monkeypatch.setenv("PYOPENGL_PLATFORM", "osmesa")
    assert select_gl_platform("auto") == "osmesa"
    monkeypatch.setenv("PYOPENGL_PLATFORM", "glx")
    with pytest.raises(ValueError, match="osmesa"):
        select_gl_platform("auto")


@pytest.mark.parametrize("plane_z", [0.0, 0.6])
def test_support_is_the_crop_sphere_cut_per_pixel(depth_renderer, plane_z):
    # a large plane z = plane_z meets the unit sphere in a circle of radius sqrt(1 - z^2), seen at
    # eye depth DISTANCE - z; its disc of pixels is the support, however coarse the triangles
    corners = np.array([[-3, -3, plane_z], [3, -3, plane_z], [3, 3, plane_z], [-3, 3, plane_z]])
    _, inside = depth_renderer.render_with_support(Mesh(corners, [[0, 1, 2], [0, 2, 3]]))
    focal_px = SIZE / 2 * np.sqrt(DISTANCE**2 - 1.0)  # the unit sphere fills the frame height
    radius_px = focal_px * np.sqrt(1.0 - plane_z**2) / (DISTANCE - plane_z)
    assert inside[0].sum() == pytest.approx(np.pi * radius_px**2, rel=0.02)
    rows, cols = np.nonzero(inside[0])
    assert abs(rows.mean() - (SIZE - 1) / 2) < 0.5 and abs(cols.mean() - (SIZE - 1) / 2) < 0.5


def test_wide_crop_keeps_the_unit_radius_frame():
    from smile_vlm.normalize import canonicalize
    from smile_vlm.render import SEQUENCE_CROP_MARGIN, canonicalize_wide

    shape = trimesh.creation.icosphere(subdivisions=3, radius=100.0)
    mesh = Mesh(shape.vertices, shape.faces, landmarks={"nose_tip": np.array([0.0, 0.0, 100.0])})
    narrow, wide = canonicalize(mesh, complete("render", {"radius_mm": 90.0})), canonicalize_wide(mesh, complete("render", {"radius_mm": 90.0}))
    assert wide.n_faces > narrow.n_faces  # triangles beyond the sphere are kept...
    radii = np.linalg.norm(wide.vertices, axis=1)
    assert radii.max() <= SEQUENCE_CROP_MARGIN + 1e-6 and radii.max() > 1.0
    # ...in the same frame: a vertex kept by both sits at the same place
    common = narrow.vertices[np.argmax(narrow.vertices[:, 2])]
    assert np.min(np.linalg.norm(wide.vertices - common, axis=1)) < 1e-6
    np.testing.assert_allclose(wide.landmarks["nose_tip"], 0.0, atol=1e-6)


def test_render_shard_logs_what_it_did(tmp_path, caplog):
    rows = [manifest_row("A_seq", "A", f, write_ball(tmp_path / f"f{f}.obj", 30.0 + 5.0 * f), "seq") for f in range(3)]
    rows += [manifest_row("A_static", "A", 0, write_ball(tmp_path / "s.obj", 40.0)),
             manifest_row("A_broken", "A", 0, str(tmp_path / "absent.obj"))]
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    with caplog.at_level("INFO", logger="smile_vlm.render"):
        render_shard(tmp_path / "manifest.csv", "toy", "A", tmp_path / "out", complete("render", {"size": 32, "registration": "none"}),
                     mesh_reader=read_mesh_for_tests)
    text = caplog.text
    assert "toy/A: 2 of 3 samples rendered (1 sequences from 3 frames), 6 views, 1 rejects" in text
    assert "rejected " + str(tmp_path / "absent.obj") in text
