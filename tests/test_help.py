"""``--help``: what the tool does, every group's options (the user's presets on the search
path included, Hydra's internal schema/* groups not), four example commands that pass
preflight, and where the README explains the rest."""

import shlex

import pytest
from helpers import REPO, cli, preflight_check

from gradinv_exp.runs import preflight

EXAMPLE = REPO / "scripts" / "plugin_example"


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> str:
    searchpath = f"hydra.searchpath=[file://{EXAMPLE / 'conf'}]"
    proc = cli(["--help", searchpath], tmp_path_factory.mktemp("help"))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_help_says_what_the_tool_does_and_where_to_read_more(page):
    assert page.startswith("gradinv-exp: how much of a federated-learning client's data leaks")
    assert "powered by Hydra" not in page and "schema" not in page
    assert "The README explains the rest" in page and "--hydra-help" in page


def test_help_lists_every_groups_options_with_the_users_presets(page):
    listed = " ".join(page.split("== Config groups")[1].split("== Fields")[0].split())
    for group in preflight.GROUPS:
        key = f"+{group}" if group in preflight.OPTIONAL else group
        names = preflight.options(group)
        assert f"{key} {names[0]}" in listed.replace(" (now)", "")
        assert all(name in listed for name in names), group
    assert "soft_prune," in listed and "soft_prune_sweep" in listed  # from hydra.searchpath
    assert "none (now)" in listed and "lenet (now)" in listed
    assert "+defense_level audit_clip_0," in listed and " dlg_noise," in listed


def test_help_examples_are_valid_commands(page, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))  # the custom defense example's module
    examples = page.split("== Examples ==")[1].strip().split("\n\n")[0].splitlines()
    assert len(examples) == 4
    for line in examples:
        command, *args = shlex.split(line)
        assert command == "gradinv-exp"
        assert preflight_check(args) is not None, line
