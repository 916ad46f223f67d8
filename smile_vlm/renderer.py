"""The renderer: canonical face meshes drawn offscreen from fixed views (pyrender on OSMesa or EGL).

PyOpenGL picks its platform when it is first imported and cannot switch afterwards, so the
platform is chosen from the settings (or an already exported ``PYOPENGL_PLATFORM``) before
pyrender is imported, and pyrender is only imported inside ``Renderer``.

View convention: yaw +θ orbits the camera θ degrees about the vertical axis toward +x (the
subject's left); pitch +φ raises the camera by φ degrees. Views are ordered
``for pitch in pitches: for yaw in yaws``, as ``views.render_views`` lists them. Meshes must be
canonical (``normalize.canonicalize``): inside the unit sphere around the origin, facing +z.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np

from smile_vlm.errors import ScanError
from smile_vlm.glcheck import require_pyopengl
from smile_vlm.lambert import install_program_cache
from smile_vlm.mesh import Mesh
from smile_vlm.views import render_views

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


def nvidia_gpu_present() -> bool:
    """True where the NVIDIA driver exposes a device (its EGL then renders on the GPU)."""
    return os.path.exists("/dev/nvidiactl") or any(Path("/dev").glob("nvidia[0-9]*"))


def select_gl_platform(backend: str) -> str:
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

    settings: the complete render section (backend, threads, yaws, pitches, size, mode,
    camera_distance; ``settings.complete("render", ...)``).
    """

    def __init__(self, settings: dict):
        self.mode = settings["mode"]
        if self.mode not in MODES:
            raise ValueError(f"render mode must be one of {MODES}, got {self.mode!r}")
        self.image_size = int(settings["size"])
        self.views = [(float(view["yaw"]), float(view["pitch"])) for view in render_views(settings)]
        self.camera_distance = float(settings["camera_distance"])
        if self.camera_distance <= 1.0:
            raise ValueError("camera_distance must exceed the unit crop radius")
        self.platform = select_gl_platform(settings["backend"])
        # llvmpipe reads this when the first context is created; parallel jobs must not each take every core
        os.environ["LP_NUM_THREADS"] = str(int(settings["threads"]))
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
            install_program_cache(self._offscreen)
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


def _load_texture(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as error:
        raise ScanError(path, f"unreadable texture ({error})") from error
