"""Offscreen multiview rendering of canonical face meshes (pyrender on OSMesa or EGL).

PyOpenGL picks its platform when it is first imported and cannot switch afterwards, so the
platform is chosen from the settings (or an already exported ``PYOPENGL_PLATFORM``) before
pyrender is imported, and pyrender is only imported inside ``Renderer``.

View convention: yaw +θ orbits the camera θ degrees about the vertical axis toward +x (the
subject's left); pitch +φ raises the camera by φ degrees. Views are ordered
``for pitch in pitches: for yaw in yaws``. Meshes must be canonical (``normalize.canonicalize``):
inside the unit sphere around the origin, facing +z.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from smile_vlm import atomic
from smile_vlm.dynamic import (
    apply_support,
    approximate_rank_pooling,
    common_support,
    exact_rank_pooling,
    sample_frames,
    to_uint8,
)
from smile_vlm.errors import ScanError
from smile_vlm.glcheck import require_pyopengl
from smile_vlm.mesh import Mesh
from smile_vlm.normalize import canonicalize, nose_tip, smooth_track

log = logging.getLogger(__name__)

MODES = ("shaded", "textured", "depth")
PLATFORMS = ("osmesa", "egl")
SURFACE_COLOUR = [0.8, 0.8, 0.8, 1.0]
# Floats on purpose: pyrender treats an integer colour list as (almost) no light at all.
LIGHT_COLOUR = [1.0, 1.0, 1.0]
LIGHT_INTENSITY = 3.0
AMBIENT = [0.1, 0.1, 0.1]
# The light travels from the upper left of the camera into the scene. A light on the camera axis
# (head-on) leaves a face almost uniformly bright, and expression relief (furrows, raised cheeks,
# an open mouth) only shows as shading when the light grazes the surface.
LIGHT_DIRECTION = (0.35, -0.55, -1.0)
# Frames of a 4D sequence are cropped to this many crop radii (whole triangles), so that every
# triangle that reaches into the crop sphere is drawn; the sphere itself is then cut per pixel
# (``Renderer.render_with_support``). 1.25 covers triangles up to 0.25 radii (22 mm at 90 mm)
# across the sphere's surface, far more than any scan's edge length.
SEQUENCE_CROP_MARGIN = 1.25


def nvidia_gpu_present() -> bool:
    """True where the NVIDIA driver exposes a device (its EGL then renders on the GPU)."""
    return os.path.exists("/dev/nvidiactl") or any(Path("/dev").glob("nvidia[0-9]*"))


def select_gl_platform(backend: str = "osmesa") -> str:
    """Export PYOPENGL_PLATFORM (an already exported value wins) and return it.

    ``backend="auto"`` takes EGL where an NVIDIA GPU is present and OSMesa elsewhere: Mesa's EGL
    also works without a GPU, but on the same software rasteriser, where it gains nothing over
    OSMesa.
    """
    if backend == "auto":
        backend = "egl" if nvidia_gpu_present() else "osmesa"
    platform = os.environ.get("PYOPENGL_PLATFORM") or backend
    if platform not in PLATFORMS:
        raise ValueError(f"GL backend must be one of {PLATFORMS}, got {platform!r}")
    if "OpenGL" in sys.modules and os.environ.get("PYOPENGL_PLATFORM") != platform:
        raise RuntimeError(
            "PyOpenGL was imported before the GL platform was chosen; "
            f"export PYOPENGL_PLATFORM={platform} before starting Python"
        )
    os.environ["PYOPENGL_PLATFORM"] = platform
    return platform


def view_rotation(yaw_degrees: float, pitch_degrees: float) -> np.ndarray:
    """4x4 pose that turns the mesh so a fixed camera on +z sees it from (yaw, pitch).

    The camera orbit is R_y(yaw) R_x(-pitch) (pitch first, then about the world vertical);
    rotating the mesh by its inverse gives the same image with the light kept at the camera.
    """
    yaw, pitch = np.deg2rad(yaw_degrees), np.deg2rad(pitch_degrees)
    about_y = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    about_x = np.array([[1, 0, 0], [0, np.cos(-pitch), -np.sin(-pitch)], [0, np.sin(-pitch), np.cos(-pitch)]])
    pose = np.eye(4)
    pose[:3, :3] = (about_y @ about_x).T
    return pose


def light_pose(direction) -> np.ndarray:
    """Pose of a pyrender DirectionalLight shining along ``direction`` (it shines along its -z)."""
    z_axis = -np.asarray(direction, dtype=np.float64)
    z_axis /= np.linalg.norm(z_axis)
    helper = np.array([0.0, 1.0, 0.0]) if abs(z_axis[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    x_axis = np.cross(helper, z_axis)
    x_axis /= np.linalg.norm(x_axis)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2] = x_axis, np.cross(z_axis, x_axis), z_axis
    return pose


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (unit length; +z for vertices without faces)."""
    first, second, third = (vertices[faces[:, corner]] for corner in range(3))
    face_normals = np.cross(second - first, third - first)  # length = 2 x area: the weighting
    flat_ids = faces.ravel()
    normals = np.stack(
        [np.bincount(flat_ids, np.repeat(face_normals[:, axis], 3), len(vertices)) for axis in range(3)],
        axis=1,
    )
    lengths = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(lengths > 0, normals / np.where(lengths > 0, lengths, 1.0), [0.0, 0.0, 1.0])
    return normals.astype(np.float32)


def split_by_uv(mesh: Mesh) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One GL vertex per distinct (vertex, uv) corner pair, as pyrender has no per-corner UVs.

    Returns (vertex ids into mesh.vertices, uv ids into mesh.uv, new faces).
    """
    if mesh.face_uv is None:  # per-vertex UVs: nothing to split
        if len(mesh.uv) != mesh.n_vertices:
            raise ScanError(mesh.source or "<mesh>", "texture coordinates match neither vertices nor face corners")
        ids = np.arange(mesh.n_vertices)
        return ids, ids, mesh.faces
    n_uv = len(mesh.uv)
    corner_keys = mesh.faces.ravel() * n_uv + mesh.face_uv.ravel()
    unique_keys, new_ids = np.unique(corner_keys, return_inverse=True)
    return unique_keys // n_uv, unique_keys % n_uv, new_ids.reshape(-1, 3)


class Renderer:
    """Renders canonical meshes from fixed views with ONE reused OffscreenRenderer.

    settings: backend ("osmesa"|"egl"|"auto"), threads (llvmpipe threads, default 1), yaws
    (default [0, -30, 30]), pitches (default [0]), size (image side, 224), mode
    ("shaded"|"textured"|"depth"), camera_distance (4.0, in crop radii).
    """

    def __init__(self, settings: dict | None = None):
        settings = settings or {}
        self.mode = settings.get("mode", "shaded")
        if self.mode not in MODES:
            raise ValueError(f"render mode must be one of {MODES}, got {self.mode!r}")
        self.image_size = int(settings.get("size", settings.get("image_size", 224)))
        self.yaws = [float(y) for y in settings.get("yaws", [0, -30, 30])]
        self.pitches = [float(p) for p in settings.get("pitches", [0])]
        self.views = [(yaw, pitch) for pitch in self.pitches for yaw in self.yaws]
        self.camera_distance = float(settings.get("camera_distance", 4.0))
        if self.camera_distance <= 1.0:
            raise ValueError("camera_distance must exceed the unit crop radius")
        self.platform = select_gl_platform(settings.get("backend", "osmesa"))
        # llvmpipe reads this when the first context is created; parallel jobs must not each take every core
        os.environ["LP_NUM_THREADS"] = str(int(settings.get("threads", 1)))
        self.last_mode: str | None = None  # the mode actually used for the last mesh (textured may fall back)

        require_pyopengl(self.platform)  # an old PyOpenGL fails inside pyrender, saying nothing useful
        import pyrender  # only now: the platform is fixed

        self._pyrender = pyrender
        self._view_poses = [view_rotation(yaw, pitch) for yaw, pitch in self.views]
        self._scene = pyrender.Scene(bg_color=[0.0, 0.0, 0.0, 1.0], ambient_light=AMBIENT)
        camera_pose = np.eye(4)
        camera_pose[2, 3] = self.camera_distance
        # the crop sphere (radius 1) exactly fills the frame height
        half_angle = np.arcsin(1.0 / self.camera_distance)
        self._tan_half_fov = float(np.tan(half_angle))
        self._pixel_radius2: np.ndarray | None = None
        self._near, self._far = self.camera_distance - 1.0, self.camera_distance + 1.0
        camera = pyrender.PerspectiveCamera(
            yfov=2.0 * half_angle, aspectRatio=1.0, znear=self._near * 0.99, zfar=self._far * 1.01
        )
        self._scene.add(camera, pose=camera_pose)
        self._scene.add(pyrender.DirectionalLight(color=LIGHT_COLOUR, intensity=LIGHT_INTENSITY),
                        pose=light_pose(LIGHT_DIRECTION))
        self._offscreen = None

    @property
    def offscreen(self):
        """The job's single OffscreenRenderer, created on first use."""
        if self._offscreen is None:
            self._offscreen = self._pyrender.OffscreenRenderer(self.image_size, self.image_size)
            _install_program_cache(self._offscreen)
        return self._offscreen

    def close(self) -> None:
        if self._offscreen is not None:
            self._offscreen.delete()
            self._offscreen = None

    def __enter__(self) -> "Renderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def render(self, mesh: Mesh) -> np.ndarray:
        """All views of one canonical mesh -> uint8 (V, H, W, 3). The mesh is uploaded once."""
        return self.render_with_support(mesh)[0]

    def render_with_support(self, mesh: Mesh) -> tuple[np.ndarray, np.ndarray]:
        """The views and, per view, the pixels whose visible surface lies inside the crop sphere.

        Returns (uint8 (V, H, W, 3), bool (V, H, W)). The test is per pixel, on the surface point
        the depth buffer holds, so the support's edge is where the surface meets the sphere and
        does not depend on how the scan is triangulated (a crop that keeps whole triangles has
        a jagged edge that changes with every re-meshed frame).
        """
        pyrender = self._pyrender
        mode = self.mode
        if mode == "textured" and (mesh.texture is None or mesh.uv is None):
            log.info("%s: no texture, rendered shaded", mesh.source)
            mode = "shaded"
        self.last_mode = mode
        flags = pyrender.RenderFlags.SKIP_CULL_FACES  # scans are open surfaces with mixed winding
        if mode == "textured":
            flags |= pyrender.RenderFlags.FLAT  # the photo already holds the lighting
        elif mode == "depth":
            flags |= pyrender.RenderFlags.DEPTH_ONLY

        node = self._scene.add(self._pyrender_mesh(mesh, mode))
        images = np.zeros((len(self.views), self.image_size, self.image_size, 3), dtype=np.uint8)
        inside = np.zeros((len(self.views), self.image_size, self.image_size), dtype=bool)
        try:
            for index, pose in enumerate(self._view_poses):
                self._scene.set_pose(node, pose)
                result = self.offscreen.render(self._scene, flags=flags)
                depth = result if mode == "depth" else result[1]
                images[index] = self._depth_to_image(depth) if mode == "depth" else result[0][..., :3]
                inside[index] = self._inside_crop_sphere(depth)
        finally:
            self._scene.remove_node(node)
        return images, inside

    def _inside_crop_sphere(self, depth: np.ndarray) -> np.ndarray:
        """Pixels whose surface point (from pyrender's linear eye depth) is within 1 of the origin.

        Views rotate the mesh about the origin, so the distance needs no un-rotation: the point
        at depth z on pixel (x, y) (normalised device coordinates) is (x t z, y t z, d - z) with
        t = tan(half the field of view) and d the camera distance.
        """
        if self._pixel_radius2 is None or self._pixel_radius2.shape != depth.shape:
            height, width = depth.shape
            ys = 1.0 - 2.0 * (np.arange(height) + 0.5) / height
            xs = 2.0 * (np.arange(width) + 0.5) / width - 1.0
            self._pixel_radius2 = (xs[None, :] ** 2 + ys[:, None] ** 2) * self._tan_half_fov**2
        distance2 = self._pixel_radius2 * depth**2 + (self.camera_distance - depth) ** 2
        return (depth > 0) & (distance2 <= 1.0)

    def _pyrender_mesh(self, mesh: Mesh, mode: str):
        """The GPU-side mesh; normals only for shading (flat texture and depth ignore them)."""
        pyrender = self._pyrender
        if mode != "textured":
            material = pyrender.MetallicRoughnessMaterial(
                baseColorFactor=SURFACE_COLOUR, metallicFactor=0.0, roughnessFactor=1.0
            )
            normals = vertex_normals(mesh.vertices, mesh.faces) if mode == "shaded" else None
            primitive = pyrender.Primitive(
                positions=mesh.vertices, normals=normals, indices=mesh.faces, material=material
            )
            return pyrender.Mesh([primitive])
        vertex_ids, uv_ids, faces = split_by_uv(mesh)
        texture = pyrender.Texture(source=_load_texture(mesh.texture), source_channels="RGB")
        material = pyrender.MetallicRoughnessMaterial(
            baseColorTexture=texture, metallicFactor=0.0, roughnessFactor=1.0
        )
        primitive = pyrender.Primitive(
            positions=mesh.vertices[vertex_ids], texcoord_0=mesh.uv[uv_ids], indices=faces, material=material
        )
        return pyrender.Mesh([primitive])

    def _depth_to_image(self, depth: np.ndarray) -> np.ndarray:
        """Metric depth -> uint8 with a FIXED range (the crop sphere), near = bright, background 0.

        A fixed range keeps depth values comparable across views, frames and subjects, which
        rank pooling over frames relies on; foreground starts at 1 so it never reads as background.
        """
        foreground = depth > 0
        scaled = (self._far - depth) / (self._far - self._near)
        values = np.where(foreground, 1.0 + 254.0 * np.clip(scaled, 0.0, 1.0), 0.0)
        return np.repeat(np.rint(values).astype(np.uint8)[..., None], 3, axis=2)


# Lambert shading for the "shaded" mode. pyrender's physically based mesh shader costs ~7x a
# flat render on llvmpipe (67 vs 9 ms per 224 px view of a 35k-vertex face on one core), and
# geometry-only renders need nothing of it. Same uniforms as pyrender's mesh shader, so the
# scene's DirectionalLight (fixed to the camera) and ambient light still drive it. Two-sided
# (|n.l|) because scans come with mixed triangle winding. Poses are rigid, so mat3(model) is
# the normal matrix and no per-vertex inverse() is needed.
LAMBERT_VERTEX_SHADER = """#version 330 core
layout(location = 0) in vec3 position;
layout(location = NORMAL_LOC) in vec3 normal;
layout(location = INST_M_LOC) in mat4 inst_m;
uniform mat4 M;
uniform mat4 V;
uniform mat4 P;
out vec3 frag_normal;
void main()
{
    mat4 model = M * inst_m;
    gl_Position = P * V * model * vec4(position, 1.0);
    frag_normal = mat3(model) * normal;
}
"""
LAMBERT_FRAGMENT_SHADER = """#version 330 core
struct Material { vec4 base_color_factor; };
struct DirectionalLight { vec3 color; float intensity; vec3 direction; };
uniform Material material;
uniform DirectionalLight directional_lights[MAX_DIRECTIONAL_LIGHTS];
uniform int n_directional_lights;
uniform vec3 ambient_light;
in vec3 frag_normal;
out vec4 frag_color;
void main()
{
    vec3 n = normalize(frag_normal);
    vec3 base = material.base_color_factor.rgb;
    vec3 color = ambient_light * base;
    for (int i = 0; i < n_directional_lights; i++) {
        float lambert = abs(dot(n, normalize(-directional_lights[i].direction)));
        color += directional_lights[i].intensity * directional_lights[i].color * base * lambert / 3.14159265;
    }
    frag_color = clamp(vec4(pow(color, vec3(1.0 / 2.2)), 1.0), 0.0, 1.0);  // sRGB-like, as pyrender
}
"""


def _install_program_cache(offscreen) -> None:
    """Give pyrender a shader cache that reuses programs and shades untextured meshes with Lambert.

    Reuse: pyrender 0.1.45 keys its cache on ``OpenGL.contextdata.getContext()``, which under
    OSMesa with PyOpenGL 3.1.10 returns a new pointer object on every call, so every render
    would compile and keep new programs (about 2 ms per view and an unbounded leak over a
    dataset). One OffscreenRenderer owns one context, so the context can be left out of the key.
    """
    from pyrender.shader_program import ShaderProgram, ShaderProgramCache

    class LambertProgram(ShaderProgram):
        SOURCES = {"lambert.vert": LAMBERT_VERTEX_SHADER, "lambert.frag": LAMBERT_FRAGMENT_SHADER}

        def _load(self, shader_filename):
            text = self.SOURCES[shader_filename]
            for define, value in self.defines.items():
                text = text.replace(define, str(value))
            return text

    class ReusingProgramCache(ShaderProgramCache):
        def __init__(self, shader_dir):
            super().__init__(shader_dir)
            self._by_source = {}

        def get_program(self, vertex_shader, fragment_shader, geometry_shader=None, defines=None):
            defines = defines or {}
            key = (vertex_shader, fragment_shader, geometry_shader, tuple(sorted(defines.items())))
            if key not in self._by_source:
                untextured_mesh = (vertex_shader, fragment_shader, geometry_shader) == ("mesh.vert", "mesh.frag", None)
                if untextured_mesh and "NORMAL_LOC" in defines and not any(d.startswith("HAS_") for d in defines):
                    program = LambertProgram("lambert.vert", "lambert.frag", defines=defines)
                else:
                    program = super().get_program(vertex_shader, fragment_shader, geometry_shader, defines)
                self._by_source[key] = program
            return self._by_source[key]

        def clear(self):
            super().clear()
            for program in self._by_source.values():
                program.delete()
            self._by_source = {}

    renderer = offscreen._renderer
    renderer._program_cache = ReusingProgramCache(renderer._program_cache.shader_dir)


def _load_texture(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as error:
        raise ScanError(path, f"unreadable texture ({error})") from error


def _default_mesh_reader(path: str) -> Mesh:
    from smile_vlm.readers import read_mesh

    return read_mesh(path)


def _default_lm3_reader(path: str) -> dict:
    from smile_vlm.readers.bosphorus import read_lm3

    return read_lm3(path)


def render_shard(
    manifest_csv: str | Path,
    dataset: str,
    subject: str,
    out_dir: str | Path,
    settings: dict | None = None,
    *,
    mesh_reader: Callable[[str], Mesh] | None = None,
    lm3_reader: Callable[[str], dict] | None = None,
) -> None:
    """Render every sample of one subject; 4D samples become one dynamic image per view.

    settings: the Renderer settings plus canonicalize's (radius_mm, units, scale) and
      frames    frames sampled uniformly per 4D sequence before rendering (int, default 16, or "all")
      pooling   "approximate" (default) or "exact" rank pooling
      keep_frames  also write each sampled frame's views as <sample_id>_f<frame>_v<view>.png (false)
      nose_smoothing  running-median window (frames) of the nose-tip track of a 4D sequence (5;
                   1 = centre every frame on its own estimate)
    All frames of a 4D sequence share one image support per view (``dynamic.common_support``), so
    the dynamic image holds facial motion and not the flicker of each frame's crop edge.
    Writes <sample_id>_v<view>.png, rejects.csv (path, reason) and, last, index.csv
    (sample_id, n_frames, images). mesh_reader / lm3_reader replace the readers (tests).
    """
    settings = settings or {}
    read_mesh = mesh_reader or _default_mesh_reader
    read_lm3 = lm3_reader or _default_lm3_reader
    pool = _pooling(settings.get("pooling", "approximate"))
    n_sampled = settings.get("frames", 16)
    keep_frames = bool(settings.get("keep_frames", False))
    smoothing = int(settings.get("nose_smoothing", 5))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    manifest = pd.read_csv(manifest_csv, dtype=str, keep_default_na=False)
    rows = manifest[(manifest["dataset"] == dataset) & (manifest["subject"] == str(subject))].copy()
    rows["frame"] = rows["frame"].astype(int)

    rejects: list[dict] = []
    index_rows: list[dict] = []
    n_untextured = 0
    n_sequences = n_frames_rendered = 0
    with Renderer(settings) as renderer:

        def reject(error: Exception, path: str) -> None:
            if isinstance(error, ScanError):
                rejects.append({"path": error.path, "reason": error.reason})
            else:  # any per-file failure: reject it, keep the shard going
                rejects.append({"path": path, "reason": f"{type(error).__name__}: {error}"})

        def load_row(row) -> Mesh | None:
            """The row's mesh with its landmark nose tip, or None (and a reject row)."""
            try:
                mesh = read_mesh(row.mesh_path)
                if row.landmark_path.lower().endswith(".lm3"):
                    tip = read_lm3(row.landmark_path).get("Nose tip")
                    if tip is not None:
                        mesh.landmarks["nose_tip"] = np.asarray(tip, dtype=np.float32)
                return mesh
            except Exception as error:
                reject(error, row.mesh_path)
                return None

        def render_mesh(mesh: Mesh, path: str, frame_of_sequence: bool = False):
            """Views of a static scan, or (views, inside-sphere pixels) of a sequence's frame."""
            nonlocal n_untextured
            try:
                mesh = canonicalize_wide(mesh, settings) if frame_of_sequence else canonicalize(mesh, settings)
            except Exception as error:
                reject(error, path)
                return None
            try:
                # GL failures are not caught: a broken context would otherwise reject the whole dataset
                views, inside = renderer.render_with_support(mesh)
            except ScanError as error:
                reject(error, path)
                return None
            n_untextured += renderer.mode == "textured" and renderer.last_mode != "textured"
            return (views, inside) if frame_of_sequence else views

        def render_row(row) -> np.ndarray | None:
            mesh = load_row(row)
            return None if mesh is None else render_mesh(mesh, row.mesh_path)

        def render_sequence(chosen: pd.DataFrame) -> list[tuple[int, np.ndarray]]:
            """Views of each readable frame, centred on one smoothed nose-tip track, on one support.

            Two passes keep one mesh in memory at a time: the first reads only nose tips.
            """
            tips, readable = [], []
            for row in chosen.itertuples():
                mesh = load_row(row)
                if mesh is None:
                    continue
                try:
                    tips.append(nose_tip(mesh))
                except Exception as error:
                    reject(error, row.mesh_path)
                    continue
                finally:
                    mesh = None  # released before the next frame is read
                readable.append(row)
            track = smooth_track(np.array(tips).reshape(-1, 3), smoothing)
            rendered = []
            for row, tip in zip(readable, track):
                mesh = load_row(row)
                if mesh is None:
                    continue
                mesh.landmarks["nose_tip"] = tip.astype(np.float32)
                result = render_mesh(mesh, row.mesh_path, frame_of_sequence=True)
                mesh = None  # released before the next frame is read
                if result is not None:
                    rendered.append((row.frame, *result))
            if not rendered:
                return []
            support = common_support(np.stack([inside for _, _, inside in rendered]))
            return [(frame, apply_support(views, support & inside)) for frame, views, inside in rendered]

        for sample_id, sample in rows.groupby("sample_id", sort=False):
            sample = sample.sort_values("frame", kind="stable")
            if len(sample) == 1:
                views = render_row(next(sample.itertuples()))
                if views is None:
                    continue
                n_frames = 1
            else:
                chosen = sample.iloc[sample_frames(len(sample), n_sampled)]
                rendered = render_sequence(chosen)
                if keep_frames:
                    for frame, frame_views in rendered:
                        for view, image in enumerate(frame_views):
                            atomic.save_image(out_dir / f"{sample_id}_f{frame}_v{view}.png", image)
                if not rendered:
                    continue
                frames = np.stack([views for _, views in rendered])  # (T, V, H, W, 3)
                views = np.stack([to_uint8(pool(frames[:, view])) for view in range(frames.shape[1])])
                n_frames = len(rendered)
                n_sequences += 1
                n_frames_rendered += n_frames
            paths = [out_dir / f"{sample_id}_v{view}.png" for view in range(len(views))]
            for path, image in zip(paths, views):
                atomic.save_image(path, image)
            index_rows.append(
                {"sample_id": sample_id, "n_frames": n_frames, "images": "|".join(str(p) for p in paths)}
            )

    if n_untextured:
        log.warning("%s/%s: %d meshes had no texture and were rendered shaded", dataset, subject, n_untextured)
    for reject_row in rejects:
        log.warning("%s/%s: rejected %s: %s", dataset, subject, reject_row["path"], reject_row["reason"])
    atomic.write_csv(out_dir / "rejects.csv", pd.DataFrame(rejects, columns=["path", "reason"]))
    atomic.write_csv(out_dir / "index.csv", pd.DataFrame(index_rows, columns=["sample_id", "n_frames", "images"]))
    n_views = sum(len(row["images"].split("|")) for row in index_rows)
    log.info(
        "%s/%s: %d of %d samples rendered (%d sequences from %d frames), %d views, %d rejects, %.1f s",
        dataset, subject, len(index_rows), rows["sample_id"].nunique(), n_sequences, n_frames_rendered,
        n_views, len(rejects), time.perf_counter() - started,
    )


def canonicalize_wide(mesh: Mesh, settings: dict) -> Mesh:
    """``canonicalize`` with a crop of SEQUENCE_CROP_MARGIN radii, in the same unit-radius frame.

    Whole triangles are kept as before, but out to beyond the crop sphere, so that the sphere
    is then cut per pixel (``Renderer.render_with_support``) on a surface with no holes at it.
    """
    radius_mm = float(settings.get("radius_mm", 90.0))
    wide = canonicalize(mesh, {**settings, "radius_mm": radius_mm * SEQUENCE_CROP_MARGIN})
    return dataclasses.replace(
        wide,
        vertices=wide.vertices * np.float32(SEQUENCE_CROP_MARGIN),
        landmarks={name: point * np.float32(SEQUENCE_CROP_MARGIN) for name, point in wide.landmarks.items()},
    )


def _pooling(name: str) -> Callable[[np.ndarray], np.ndarray]:
    if name == "approximate":
        return approximate_rank_pooling
    if name == "exact":
        return exact_rank_pooling
    raise ValueError(f"pooling must be 'approximate' or 'exact', got {name!r}")
