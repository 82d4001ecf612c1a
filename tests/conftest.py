"""One import style for the suite: the shared helpers in this folder (fabricate, image_folder, checkpoint_crash,
reid_reference, and helpers of other test modules) are imported as top-level modules (`import fabricate`), because
this folder is on sys.path however pytest is started (`pytest`, `python -m pytest`, from any directory)."""

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
