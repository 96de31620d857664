"""Fixtures shared by every test folder (helpers live in tests/helpers.py)."""

from __future__ import annotations

import pytest
import torch
from helpers import cli

torch.set_num_threads(1)  # the project default; two threads per test process oversubscribe


@pytest.fixture
def run_cli(tmp_path):
    def _run(*args: str):
        return cli(list(args), tmp_path)

    return _run
