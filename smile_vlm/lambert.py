"""The shaded mode's Lambert shader and a shader cache that pyrender reuses under OSMesa.

Imports pyrender only inside ``install_program_cache``, which runs after the GL platform is
chosen (renderer.select_gl_platform).
"""

from __future__ import annotations

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


def install_program_cache(offscreen) -> None:
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
