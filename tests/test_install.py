"""The install: one consistent set of pins (pyproject.toml, envs/), a clean `pip check`, a PyOpenGL
check that names the fix, and rules that all log, benchmark and name the same environment."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from smile_vlm import glcheck

REPO = Path(__file__).resolve().parents[1]
RULE_FILES = sorted((REPO / "workflow" / "rules").glob("*.smk"))


def pyproject_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}


def env_pins(path: Path) -> dict[str, str]:
    spec = yaml.safe_load(path.read_text())
    pip = next(item["pip"] for item in spec["dependencies"] if isinstance(item, dict))
    pins = {}
    for line in pip:
        if line.startswith("-"):  # pip options (an extra index), not packages
            continue
        name, _, version = line.partition("==")
        assert version, f"{path.name}: {line!r} is not pinned with =="
        pins[canonicalize_name(name)] = version.strip()
    return pins


@pytest.mark.parametrize("env", sorted((REPO / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_conda_env_pins_the_dependencies_of_pyproject(env):
    required, pins = pyproject_requirements(), env_pins(env)
    assert set(pins) == set(required), "envs/ and pyproject.toml list different packages"
    for name, version in pins.items():
        specifier = required[name].specifier
        assert specifier.contains(version, prereleases=True), f"{name}=={version} outside pyproject's {specifier}"
        exact = [s.version for s in specifier if s.operator == "=="]
        assert exact in ([], [version]), f"{name}: envs pin {version}, pyproject {exact}"


def test_the_renderer_comes_without_pyrenders_pyopengl_pin():
    required = pyproject_requirements()
    assert "pyrender" not in required  # pyrender 0.1.45 pins PyOpenGL==3.1.0
    assert required["pyopengl"].specifier.contains("3.1.10")
    assert not required["pyopengl"].specifier.contains("3.1.0")


def test_pip_check_is_clean():
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def installed(versions: dict):
    def version(name):
        if name not in versions:
            raise glcheck.metadata.PackageNotFoundError(name)
        return versions[name]

    return version


def test_an_old_pyopengl_is_refused_with_the_command_that_fixes_it(monkeypatch):
    monkeypatch.setattr(glcheck.metadata, "version", installed({"PyOpenGL": "3.1.0"}))
    with pytest.raises(glcheck.OpenGLSetupError) as error:
        glcheck.require_pyopengl("osmesa")
    message = str(error.value)
    assert message.startswith("PyOpenGL 3.1.0 cannot create an OSMesa context")
    assert message.endswith(f"run: {sys.executable} -m pip install 'PyOpenGL==3.1.10'")
    assert glcheck.require_pyopengl("egl") == "3.1.0"  # EGL works with 3.1.0

    # pyrender 0.1.45 beside pyrender2 would pin PyOpenGL back: the fix removes it first
    monkeypatch.setattr(glcheck.metadata, "version", installed({"PyOpenGL": "3.1.0", "pyrender": "0.1.45"}))
    with pytest.raises(glcheck.OpenGLSetupError, match=r"run: \S+ -m pip uninstall -y pyrender && .* install "
                       r"--force-reinstall --no-deps 'pyrender2==0.2.2' 'PyOpenGL==3.1.10'$"):
        glcheck.require_pyopengl("osmesa")

    monkeypatch.setattr(glcheck.metadata, "version", installed({"PyOpenGL": "3.1.4"}))
    assert glcheck.require_pyopengl("osmesa") == "3.1.4"


def test_a_missing_pyopengl_is_refused(monkeypatch):
    monkeypatch.setattr(glcheck.metadata, "version", installed({}))
    with pytest.raises(glcheck.OpenGLSetupError, match="PyOpenGL is not installed; run: "):
        glcheck.require_pyopengl()


def test_installed_pyopengl_renders_offscreen():
    assert glcheck._version_tuple(glcheck.require_pyopengl("osmesa")) >= glcheck.MIN_OSMESA_PYOPENGL


def rule_blocks():
    """(file, rule name, body) of every rule and checkpoint in workflow/rules/."""
    for path in RULE_FILES:
        text = path.read_text()
        starts = [m for m in re.finditer(r"^(?:rule|checkpoint) (\w+):", text, re.M)]
        for i, match in enumerate(starts):
            end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
            yield path.name, match.group(1), text[match.end():end]


def test_every_rule_logs_benchmarks_and_names_the_one_environment():
    blocks = list(rule_blocks())
    assert len(blocks) > 10
    for name, rule, body in blocks:
        assert re.search(r"^    log:", body, re.M), f"{name}: rule {rule} has no log:"
        assert re.search(r"^    benchmark:\n        \"logs/benchmarks/" + rule + "/", body, re.M), \
            f"{name}: rule {rule} has no benchmark: under logs/benchmarks/{rule}/"
        conda = re.search(r"^    conda:\n        \"([^\"]+)\"", body, re.M)
        assert conda, f"{name}: rule {rule} has no conda:"
        assert (REPO / "workflow" / "rules" / conda.group(1)).resolve() == REPO / "envs" / "smile-vlm.yaml"


def test_version_is_the_packages():
    from importlib import metadata

    import smile_vlm

    assert metadata.version("smile-vlm") == smile_vlm.__version__
