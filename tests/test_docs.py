"""Every shell command of the README and of docs/ is kept working: the README's five
examples run end to end, in order, with a tiny budget; every experiment command of the
docs pages passes the command line's preflight (composition, ranges, plugins probed,
data, model) in a folder holding the files the page shows; links between pages resolve."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, preflight_check
from test_readme import TINY, commands, section

DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
EXAMPLES = "Five examples"
# The program words of an experiment command, as the pages write them.
EXPERIMENT = (["python", "-m", "gradinv_exp"], ["gradinv-exp"])
# Commands of other kinds on the docs pages: what each needs that a test cannot give.
NOT_RUN = {
    "pip": "installs packages (network or a wheel build)",
    "make": "builds the environment or runs benchmarks for minutes",
    "scripts/plugin_example/run.sh": "runs in tests/test_plugins.py and the README examples",
    "python -m gradinv_exp.compare": "reads run folders of the user's own sweeps",
    "python -m gradinv_exp.utility": "trains for minutes; tested in tests/analysis",
}


def shell_lines(text: str) -> list[str]:
    """The commands of the ```bash blocks of ``text``, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return commands(joined)


def files_shown(text: str, folder: Path) -> None:
    """Write every code block of ``text`` whose first line names a file (``# my_x.py``,
    ``# my_conf/defense/x.yaml: ...``) into ``folder``, as a user copying the page would."""
    for block in re.findall(r"```\w*\n(.*?)```", text, re.DOTALL):
        head = "\n".join(block.splitlines()[:2])  # line 1 may be Hydra's `# @package`
        found = re.search(r"^#\s*([\w./-]+\.(?:py|yaml))\b", head, re.MULTILINE)
        if found and not found.group(1).startswith("/"):
            path = folder / found.group(1)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block)


def experiment_argv(command: str) -> list[str] | None:
    """The arguments of an experiment command (``python -m gradinv_exp ARGS``), else None."""
    words = shlex.split(command)
    env = [w for w in words if re.match(r"^[A-Z_]+=", w)]
    words = words[len(env) :]
    words = [w.replace(".venv/bin/", "") for w in words[:3]] + words[3:]
    for program in EXPERIMENT:
        if words[: len(program)] == program:
            return words[len(program) :]
    return None


def test_every_docs_command_is_of_a_known_kind():
    for page in PAGES:
        for command in shell_lines(page.read_text()):
            kind = any(command == k or command.startswith(f"{k} ") for k in NOT_RUN)
            known = kind or experiment_argv(command) is not None
            assert known, (page.name, command)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_experiment_command_of_a_docs_page_passes_preflight(page, tmp_path, monkeypatch):
    text = page.read_text()
    files_shown(text, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for command in shell_lines(text):
        argv = experiment_argv(command)
        if argv is None or any("<" in a for a in argv):
            continue
        argv = [a.replace("$USER", "user").replace("/scratch/", f"{tmp_path}/") for a in argv]
        needs = [a.split("=", 1)[1] for a in argv if a.startswith("model.checkpoint=")]
        if any(not Path(n).exists() for n in needs):  # a model the user trained elsewhere
            continue
        preflight_check(argv)


def tiny_python(block: str) -> str:
    """The README's Python example at a tiny budget."""
    return block.replace('"dataset=photos",', ", ".join(f'"{o}"' for o in TINY) + ",")


@pytest.mark.slow
def test_the_readme_examples_run_in_order_with_a_tiny_budget(tmp_path):
    text = section(EXAMPLES)
    files_shown(text, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env |= {"PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}", "HYDRA_FULL_ERROR": "0"}
    env |= {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"}
    ran = []
    for command in shell_lines(text):
        argv = experiment_argv(command)
        if argv is not None:
            run = [sys.executable, "-m", "gradinv_exp", *argv, *TINY]
            if not any(a.startswith("hydra.sweep.dir=") for a in argv):
                run += [f"hydra.run.dir={tmp_path / f'run{len(ran)}'}"]
        else:
            words = shlex.split(command)
            run = [w for w in words if not re.match(r"^[A-Z_]+=", w)]
            if run[0].startswith("scripts/"):
                run = [str(REPO / run[0]), *run[1:], "attack.iterations=2"]
            elif run[0] == "python":
                run = [sys.executable, *run[1:]]
        proc = subprocess.run(
            run, cwd=tmp_path, env=env | {"PYTHON": sys.executable}, capture_output=True,
            text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, (command, proc.stdout[-2000:], proc.stderr[-2000:])
        ran.append(command)
    assert len(ran) == 5, ran  # one run, a sweep, compare, two plugin commands
    assert (tmp_path / "multirun/prune/summary.csv").is_file()
    assert (tmp_path / "report/compare.csv").is_file()
    assert (tmp_path / "plugin_out/sweep/curves.png").is_file()
    python = re.findall(r"```python\n(import gradinv_exp\n.*?)```", text, re.DOTALL)
    assert len(python) == 1
    proc = subprocess.run(
        [sys.executable, "-c", tiny_python(python[0])], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "runs/n1/metrics.json").is_file()


def test_every_link_between_pages_resolves():
    for page in [REPO / "README.md", *PAGES]:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)#:]+\.(?:md|png|ipynb))(?:#[\w-]+)?\)", text):
            assert (page.parent / target).exists(), (page.name, target)
        for target, anchor in re.findall(r"\]\(([^)#:]*)#([\w-]+)\)", text):
            linked = (page.parent / target) if target else page
            if not linked.exists():
                continue  # a page another change adds: reported by the check above
            headings = re.findall(r"^#+ (.+)$", linked.read_text(), re.MULTILINE)
            anchors = {
                re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings
            }
            assert anchor in anchors, (page.name, target, anchor)
