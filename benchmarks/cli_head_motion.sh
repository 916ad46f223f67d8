#!/usr/bin/env bash
# The same synthetic BU-4DFE subject (default synthetic settings, one subject) with per-frame head
# jitter (synthetic.head_motion.kind: jitter, +-4 deg / 3 mm) and with the same jitter scaled to
# zero, through the CLI alone (synth, index, render); then the correlation of each sequence's
# dynamic images (all views together, and the mean of each view's own) between the two, for every
# render.registration.
#   bash benchmarks/cli_head_motion.sh [WORKDIR]
set -euo pipefail
work=${1:-$(mktemp -d)}
py=${PYTHON:-.venv/bin/python}
for copy in moving still; do
  amp='"jitter_deg": 4.0, "jitter_mm": 3.0'
  [ "$copy" = still ] && amp='"jitter_deg": 0.0, "jitter_mm": 0.0'
  $py -m smile_vlm synth --dataset bu4dfe --root "$work/$copy" \
    --settings "{\"subjects\": {\"bu4dfe\": 1}, \"head_motion\": {\"kind\": \"jitter\", $amp}}"
  $py -m smile_vlm index --dataset bu4dfe --root "$work/$copy" --manifest "$work/$copy.csv" --rejects "$work/${copy}_rejects.csv"
  subject=$($py -c "import pandas as pd; print(pd.read_csv('$work/$copy.csv', dtype=str)['subject'].iloc[0])")
  for method in none auto icp; do
    $py -m smile_vlm render --manifest "$work/$copy.csv" --dataset bu4dfe --subject "$subject" \
      --out "$work/views_${method}_$copy" --settings "{\"registration\": \"$method\"}"
  done
done
$py - "$work" <<'PY'
import sys
from pathlib import Path
import numpy as np, pandas as pd
from PIL import Image
work = Path(sys.argv[1])
def images(folder):
    index = pd.read_csv(folder / "index.csv")
    return {r.sample_id: np.stack([np.asarray(Image.open(p), dtype=np.float64) for p in r.images.split("|")])
            for r in index.itertuples()}
def corr(a, b):
    return np.corrcoef(a.ravel(), b.ravel())[0, 1]
for method in ("none", "auto", "icp"):
    moving, still = images(work / f"views_{method}_moving"), images(work / f"views_{method}_still")
    print(method, "all views together:", ", ".join(f"{s.split('_', 1)[1]} {corr(moving[s], still[s]):.3f}"
                                                  for s in sorted(still)))
    # each view is stretched to 0..255 by its own extreme pixel: the mean of the views' own
    # correlations is blind to a view that is only rescaled
    print(method, "mean of the views' own:", ", ".join(
        f"{s.split('_', 1)[1]} {np.mean([corr(m, t) for m, t in zip(moving[s], still[s])]):.3f}" for s in sorted(still)))
PY
