"""Where the tests find ICT-FaceKit (MIT; https://github.com/ICT-VGL/ICT-FaceKit), which is not
shipped: the folder of a clone's FaceXModel files, from SMILE_VLM_ICT_DIR, else data/ict-facekit
in the checkout (ignored by git). Tests that need it skip without it."""

import os
from pathlib import Path

ICT_DIR = Path(os.environ.get("SMILE_VLM_ICT_DIR", Path(__file__).resolve().parents[1] / "data" / "ict-facekit"))
