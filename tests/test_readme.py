"""The README and docs are true to the code: every command of the README's quick start
runs, with a tiny budget, and does what the README says; the table of data-set defaults
(docs/configuration.md) is the YAML's; the table of scripts (docs/development.md) names
every script and every flag."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO, typed_config

from gradinv_exp.runs import preflight

README = (REPO / "README.md").read_text()
DOCS = REPO / "docs"
QUICK_START = "Two commands"  # the section a new user reads first
# appended to every experiment command: the bundled photos, small images, two steps
TINY = ["dataset=photos", "dataset.image_size=16", "attack.iterations=2", "attack.snapshot_every=1"]
# make targets of the quick start and the arguments that make each one tiny
MAKE_ARGS = {
    "run": lambda out: [*TINY, f"hydra.sweep.dir={out}"],
    "test": lambda out: ["-n", "0", "tests/analysis/test_tradeoff.py"],  # one small file
}


def section(title: str, text: str = README) -> str:
    """The text of the section ``## title`` of ``text`` (up to the next ``## ``)."""
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def commands(text: str) -> list[str]:
    """The command lines of the ```bash blocks in ``text``, without comments."""
    blocks = re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line]


def tiny(command: str, out: Path) -> list[str]:
    """``command`` as this environment runs it, with a tiny budget, writing into ``out``."""
    words = shlex.split(command)
    if words[0] == "make":
        venv = Path(sys.prefix)
        make_args = " ".join(shlex.quote(a) for a in MAKE_ARGS[words[1]](out))
        # -o: take the environment as installed (never rebuild it from a test)
        return ["make", "-C", str(REPO), "-o", f"{venv}/.installed", f"VENV={venv}",
                *words[1:], f"ARGS={make_args}"]  # fmt: skip
    assert words[0].startswith(".venv/bin/"), f"unknown kind of command: {command}"
    program = Path(sys.prefix) / "bin" / Path(words[0]).name
    runs = [f"hydra.run.dir={out}", f"hydra.sweep.dir={out}"]
    return [str(program), *words[1:], *TINY, *runs]


def test_quick_start_lists_the_commands_this_test_knows():
    found = commands(section(QUICK_START))
    assert found[:2] == ["make run", "make test"]
    assert all(c.startswith(".venv/bin/") for c in found[2:]) and len(found) >= 3


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="the quick start needs make")
def test_every_quick_start_command_runs_with_a_tiny_budget(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env |= {"PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    for i, command in enumerate(commands(section(QUICK_START))):
        out = tmp_path / f"command{i}"
        proc = subprocess.run(
            tiny(command, out), cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, (command, proc.stdout[-2000:], proc.stderr[-2000:])
        if command.startswith("make test"):
            assert re.search(r"\b\d+ passed\b", proc.stdout) and "failed" not in proc.stdout
        elif command.startswith("make run"):  # the original notebook's comparison as one sweep
            summary = pd.read_csv(out / "summary.csv")
            assert sorted(summary["defense"]) == ["noise", "none", "prune", "quantize"]
            assert summary["status"].eq("ok").all() and summary["steps"].eq(2).all()
            assert (out / "comparison.png").is_file() and (out / "curves.png").is_file()
        else:  # one experiment with the command's overrides
            metrics = json.loads((out / "metrics.json").read_text())
            assert metrics["status"] == "ok" and metrics["steps"] == 2
            for override in (w for w in shlex.split(command) if "=" in w):
                key, value = override.split("=", 1)
                key = key if "." in key else f"{key}.name"  # defense=noise: a group's option
                assert str(metrics["config"][key]) == value, override


def data_table() -> pd.DataFrame:
    """The table of data-set defaults (docs/configuration.md, section Data), one row per
    data set."""
    text = section("Data", (DOCS / "configuration.md").read_text())
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| `")]
    header = next(line for line in text.splitlines() if line.startswith("| dataset |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    frame = pd.DataFrame([[c.strip().strip("`") for c in r] for r in rows], columns=columns)
    return frame.set_index("dataset")


def test_the_docs_table_of_data_set_defaults_is_the_yaml_files():
    table = data_table()
    assert sorted(table.index) == preflight.options("dataset")
    for name, row in table.iterrows():
        ds = typed_config(f"dataset={name}").dataset
        size = "counted on disk" if ds.size is None else str(ds.size)
        assert row["size (train images)"] == size, name
        for key in ("index", "image_size", "channels", "num_classes", "server_fraction", "root"):
            value = getattr(ds, key)
            assert row[key] == ("null" if value is None else str(value)), (name, key)
        for key in ("download", "offline_fallback"):
            assert row[key] == str(getattr(ds, key)).lower(), (name, key)
        assert ds.batch_size == 1 and ds.mean is None and ds.std is None, name
        assert ds.alpha is None, name


def test_the_docs_table_of_scripts_names_every_script_and_flag():
    development = (DOCS / "development.md").read_text()
    rows = {
        line.split("`")[1]: line
        for line in section("Development", development).splitlines()
        if line.startswith("| `scripts/")
    }
    for page in sorted((REPO / "docs").glob("*.md")):  # a docs page's row adds its flags
        for line in page.read_text().splitlines():
            if line.startswith("| `scripts/") and line.split("`")[1] in rows:
                rows[line.split("`")[1]] += line
    scripts = sorted(
        f"scripts/{p.name}" for p in (REPO / "scripts").iterdir() if p.suffix in (".py", ".sh")
    )
    assert sorted(rows) == scripts
    for name, row in rows.items():
        flags = re.findall(r'add_argument\(\s*"(--[\w-]+)"', (REPO / name).read_text())
        assert all(f"`{flag}`" in row for flag in flags), (name, flags)
