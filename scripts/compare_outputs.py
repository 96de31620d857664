#!/usr/bin/env python
"""Thin wrapper: ``scripts/compare_outputs.py PATH ... [--out DIR]`` = gradinv_exp.compare."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gradinv_exp.compare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
