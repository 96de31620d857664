"""Every bad command line in scripts/bad_overrides.txt stops before any work with one line.

All lines are checked in-process through ``preflight.check`` (fast); a few through the
real command line for the exit code and the single stderr line (tests/test_cli.py has
more of those; each costs a Python start).
"""

from pathlib import Path

import pytest
import torch
from conftest import REPO

from gradinv_exp import checks, config, models, preflight

LINES = [
    line
    for line in (REPO / "scripts" / "bad_overrides.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]


@pytest.fixture
def scratch(tmp_path) -> Path:
    """A folder with grey.pt: a 1-channel LeNet's state dict (for 3-channel data: mismatch)."""
    grey = models.build(
        "lenet", channels=1, num_classes=100, image_size=32, activation="sigmoid",
        init_range=0.5, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    torch.save(grey.state_dict(), tmp_path / "grey.pt")
    return tmp_path


def culprit(line: str) -> str:
    """The key the message must name: the last override's key (a sweep: the -m hint)."""
    key, value = line.split()[-1].split("=", 1)
    if "," in value and not value.startswith("[") and "-m" not in line:
        return "add -m (--multirun)"
    return key if key in preflight.GROUPS or "." in key or key == "trials" else ""


@pytest.mark.parametrize("line", LINES)
def test_bad_line_is_one_config_error(line, scratch):
    config.register()
    with pytest.raises(checks.ConfigError) as info:
        preflight.check(line.replace("{tmp}", str(scratch)).split())
    message = str(info.value)
    assert "\n" not in message and message
    assert culprit(line) in message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("dataset=photos model.checkpoint={tmp}/grey.pt",
         "has shape (12, 1, 5, 5) but the model needs (12, 3, 5, 5)"),
    ],
)  # fmt: skip
def test_bad_line_exits_2_with_one_stderr_line(run_cli, scratch, line, expected):
    never = scratch / "never"
    args = line.replace("{tmp}", str(scratch)).split()
    proc = run_cli(*args, f"hydra.run.dir={never}", f"hydra.sweep.dir={never}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradinv-exp: error: ") and expected in lines[0]
    assert not never.exists()


def test_model_too_deep_for_the_image_size_fails_before_any_job(monkeypatch):
    def big_kernel(channels, num_classes, image_size, activation):
        return torch.nn.Sequential(
            torch.nn.Conv2d(channels, 4, kernel_size=9), torch.nn.Flatten(),
            torch.nn.LazyLinear(num_classes),
        )  # fmt: skip

    monkeypatch.setitem(models.MODELS, "big_kernel", big_kernel)
    models.check_fits("big_kernel", 3, 10, 9, "relu")  # 9x9 input: fits
    with pytest.raises(checks.ConfigError) as info:
        models.check_fits("big_kernel", 3, 10, 8, "relu")
    message = str(info.value)
    assert message.startswith("model.name='big_kernel' is not allowed with dataset channels=3, ")
    assert "image_size=8" in message and "RuntimeError" in message and "\n" not in message
