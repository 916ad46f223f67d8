"""Dataset indexers: walk a raw dataset tree, check every mesh, list samples, rejects and skips.

``index_dataset`` returns three tables: the manifest (one row per static scan or per 4D frame,
columns MANIFEST_COLUMNS of docs/design.md), the rejects (path, reason: a sample's file that
failed its checks) and the skipped files (path, reason: everything else under the root that
the index saw and did not use). Together they account for every file under the root, so a
scan can be lost only with a row saying why. A broken file costs exactly its own row: layouts
collect candidates without reading meshes, then every candidate is checked on its own (in
worker processes when settings["workers"] > 1). The package: ``layouts`` (where each dataset
keeps its files), ``checks`` (one file), ``identities`` (one spelling per person),
``accounting`` (the files not used, the log); ``dataset`` runs them in that order. This module is
the package's face: it only re-exports.

settings: validate ("sampled", the default, parses in full what rendering reads — every
static scan and the frames of each 4D sequence that ``dynamic.sample_frames`` picks with
``frames`` — and checks only the header and end of the other frames, which nothing reads;
"full" parses every mesh and landmark file; "header" only checks existence, size, headers and
file ends, and parses a file only when these fail, so that it never rejects a file that
parses), frames (render.frames: 16 or "all"), workers (1), require_texture (False: a sample without a
texture keeps texture_path ''), max_file_mb (per-file size limit, checked before reading),
same_person ({raw subject spelling: spelling to use}, for two spellings of one person),
task_classes (BP4D task -> class), annotations and mesh_dir (4DME spreadsheet and mesh
folder, relative to root).
"""

from smile_vlm.index.accounting import DISPLAY_NAMES
from smile_vlm.index.checks import check_file
from smile_vlm.index.dataset import (
    MANIFEST_COLUMNS,
    check_candidates,
    index_dataset,
    shown_path,
    write_index,
)
from smile_vlm.index.identities import check_identities
from smile_vlm.settings import DEFAULT_INDEX as DEFAULT_SETTINGS

__all__ = ["DEFAULT_SETTINGS", "DISPLAY_NAMES", "MANIFEST_COLUMNS", "check_candidates", "check_file",
           "check_identities", "index_dataset", "shown_path", "write_index"]
