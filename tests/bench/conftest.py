"""The harness lives in ``bench/`` at the repository root, which is not an installed
package: make it importable under a bare ``pytest`` too (``python -m pytest``
already has the working directory on ``sys.path``)."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
