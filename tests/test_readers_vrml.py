"""VRML 2.0 reader on hand-written files whose triangles and UV corners are known."""

from __future__ import annotations


import numpy as np
import pytest

from conftest_readers import (
    POLY_FACE_UV,
    POLY_FACES,
    POLY_POLYGONS,
    POLY_UV_POLYGONS,
    POLY_UVS,
    POLY_VERTICES,
    vrml_text,
    write_vrml,
)
from smile_vlm.errors import ScanError
from smile_vlm.readers import read_mesh, resolve_texture
from smile_vlm.readers.vrml import parse_vrml, read_vrml
from ict_data import ICT_DIR


def test_quad_pentagon_triangle_are_fan_triangulated_with_per_corner_uvs(tmp_path):
    mesh = read_vrml(write_vrml(tmp_path / "F0001_AN01WH_F3D.wrl", url="F0001_AN01WH_F3D.bmp"))
    np.testing.assert_array_equal(mesh.vertices, np.array(POLY_VERTICES, dtype=np.float32))
    assert mesh.faces.tolist() == [list(f) for f in POLY_FACES]
    assert mesh.face_uv.tolist() == [list(f) for f in POLY_FACE_UV]
    np.testing.assert_allclose(mesh.uv, np.array(POLY_UVS), rtol=0, atol=1e-6)
    # The pentagon's third triangle uses UV corners 4, 7, 8 = (0.4, 0.8), (0.7, 0.65), (0.8, 0.6).
    np.testing.assert_allclose(mesh.uv[mesh.face_uv[4]], [[0.4, 0.8], [0.7, 0.65], [0.8, 0.6]], atol=1e-6)
    assert mesh.texture == tmp_path / "F0001_AN01WH_F3D.bmp"
    assert mesh.source == tmp_path / "F0001_AN01WH_F3D.wrl"


@pytest.mark.parametrize("commas", [False, True])
@pytest.mark.parametrize("first_on_point_line", [False, True])
@pytest.mark.parametrize("trailing_minus_one", [False, True])
def test_layout_variants_give_the_same_mesh(tmp_path, commas, first_on_point_line, trailing_minus_one):
    path = write_vrml(
        tmp_path / "a.wrl",
        commas=commas,
        first_on_point_line=first_on_point_line,
        trailing_minus_one=trailing_minus_one,
    )
    mesh = read_vrml(path)
    assert mesh.faces.tolist() == [list(f) for f in POLY_FACES]
    assert mesh.face_uv.tolist() == [list(f) for f in POLY_FACE_UV]


def test_section_1_3_skeleton_five_vertices_quad_triangle_six_uvs(tmp_path):
    # Verbatim layout of docs/datasets.md: first coordinate on the 'point [' line, one
    # "x y z," per line, last item without comma, last polygon with its -1.
    text = """#VRML V2.0 utf8
#Tricorder Technology plc - 2000
DEF Tricorder_object Transform {
  children [
    Shape {
      appearance Appearance {
        texture ImageTexture {
          url "F0001_AN01WH_F3D.bmp"
          repeatS FALSE
          repeatT FALSE
        }
      }
      geometry IndexedFaceSet {
        ccw TRUE
        solid FALSE
        convex TRUE
        creaseAngle 1.57
        coord Coordinate {
          point [ 27.4703 -60.5966 -23.9859,
            28.0 -60.0 -23.0,
            29.5 -58.25 -22.5,
            27.0 -57.0 -24.0,
            -56.8643 -42.279 -98.5402
          ]
        }
        coordIndex [
          2 0 1 -1,
          1 2 3 4 -1
        ]
        texCoord TextureCoordinate {
          point [
            0.278715 0.515789,
            0.28 0.52,
            0.29 0.53,
            0.3 0.54,
            0.31 0.55,
            0.32 0.56
          ]
        }
        texCoordIndex [
          0 1 2 -1,
          3 4 5 0 -1
        ]
      }
    }
  ]
}
DEF Tricorder_Camera_Front Viewpoint { position 7.76 -26.35 214.7 }
DEF Tricorder_Camera_Back Viewpoint { position 7.76 -26.35 -214.7 }
"""
    path = tmp_path / "F0001_AN01WH_F3D.wrl"
    path.write_text(text)
    mesh = read_mesh(path)
    assert mesh.n_vertices == 5
    np.testing.assert_allclose(mesh.vertices[0], [27.4703, -60.5966, -23.9859], rtol=1e-6)
    np.testing.assert_allclose(mesh.vertices[4], [-56.8643, -42.279, -98.5402], rtol=1e-6)
    assert mesh.faces.tolist() == [[2, 0, 1], [1, 2, 3], [1, 3, 4]]
    assert mesh.face_uv.tolist() == [[0, 1, 2], [3, 4, 5], [3, 5, 0]]
    assert mesh.uv.shape == (6, 2)
    assert mesh.texture is None  # the bmp is absent and not required


def test_texcoord_without_texcoordindex_uses_coordindex(tmp_path):
    text = vrml_text(POLY_VERTICES, POLY_POLYGONS, POLY_UVS, POLY_UV_POLYGONS, url=None)
    start = text.index("        texCoordIndex")
    text = text[:start] + text[text.index("]", start) + 2 :]
    mesh = parse_vrml(text, tmp_path / "a.wrl")
    assert mesh.face_uv.tolist() == mesh.faces.tolist()
    assert mesh.texture is None


def test_mesh_without_texcoords(tmp_path):
    mesh = parse_vrml(vrml_text(POLY_VERTICES, POLY_POLYGONS, url=None), tmp_path / "a.wrl")
    assert mesh.uv is None and mesh.face_uv is None
    assert mesh.n_faces == 6


def test_missing_texture_is_an_error_only_when_required(tmp_path):
    path = write_vrml(tmp_path / "a.wrl", texture=False)
    assert read_vrml(path).texture is None
    with pytest.raises(ScanError, match="texture 'tex.bmp' not found") as info:
        read_vrml(path, require_texture=True)
    assert info.value.path == str(path)


def test_resolve_texture_accepts_subfolder_and_inner_symlink(tmp_path):
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "t.bmp").write_bytes(b"x")
    (tmp_path / "alias.bmp").symlink_to(tmp_path / "maps" / "t.bmp")
    assert resolve_texture(tmp_path, "maps/t.bmp") == tmp_path / "maps" / "t.bmp"
    assert resolve_texture(tmp_path, "alias.bmp") == tmp_path / "alias.bmp"


ICT = ICT_DIR


@pytest.mark.skipif(not (ICT / "generic_neutral_mesh.obj").is_file(), reason="ICT-FaceKit subset not present")
def test_real_quad_face_written_as_vrml_reads_back_exactly(tmp_path):
    # Real face topology (quads and triangles, more UVs than vertices) in the Tricorder layout.
    positions, uvs, polygons, uv_polygons = [], [], [], []
    for line in (ICT / "generic_neutral_mesh.obj").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "v":
            positions.append([float(x) for x in fields[1:4]])
        elif fields and fields[0] == "vt":
            uvs.append([float(x) for x in fields[1:3]])
        elif fields and fields[0] == "f":
            corners = [corner.split("/") for corner in fields[1:]]
            polygons.append([int(c[0]) - 1 for c in corners])
            uv_polygons.append([int(c[1]) - 1 for c in corners])
    path = tmp_path / "000.wrl"
    path.write_text(vrml_text(positions, polygons, uvs, uv_polygons, url="000.jpg"))
    mesh = read_vrml(path)
    fan = [(p[0], p[k], p[k + 1]) for p in polygons for k in range(1, len(p) - 1)]
    uv_fan = [(p[0], p[k], p[k + 1]) for p in uv_polygons for k in range(1, len(p) - 1)]
    np.testing.assert_array_equal(mesh.faces, np.array(fan))
    np.testing.assert_array_equal(mesh.face_uv, np.array(uv_fan))
    np.testing.assert_allclose(mesh.vertices, np.array(positions), rtol=1e-5, atol=1e-5)
    assert len(mesh.uv) == len(uvs) > mesh.n_vertices
