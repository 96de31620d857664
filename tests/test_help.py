"""``--help``: what the tool does, every group's options (the user's presets on the search
path included, Hydra's internal schema/* groups not), four example commands that pass
preflight, and where the README explains the rest."""

import shlex

import pytest
from helpers import REPO, cli, preflight_check

from gradinv_exp import config
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
    for group in config.GROUPS:
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


def test_help_group_lists_each_options_fields_defaults_and_allowed_values(tmp_path):
    import dataclasses

    from gradinv_exp.defenses import DEFENSES

    proc = cli(["--help", "defense"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "defense=prune\n  Zero the entries whose |g|" in text
    assert "  defense.ratio: float = 0.2\n      fraction of entries (smallest |g|) set to zero; " \
           "allowed: must be in [0, 1)" in text  # fmt: skip
    assert "defense.scope: str = 'layer'" in text and "allowed: choose one of layer, global" in text
    assert "defense.target: str = ??? (required)" in text  # custom: the user names it
    for entry in DEFENSES:  # every option, with every field of its schema
        assert f"\ndefense={entry.name}\n" in text
        for field in dataclasses.fields(entry.schema):
            assert field.name == "name" or f"defense.{field.name}: " in text, entry.name


def test_help_run_and_a_users_presets_and_a_wrong_group(tmp_path):
    from gradinv_exp.cli import group_help

    top = group_help.page("run")
    assert "  trials: int = 1\n" in top and "allowed: must be >= 1" in top
    searchpath = f"hydra.searchpath=[file://{EXAMPLE / 'conf'}]"
    mine = group_help.page("defense", [searchpath])
    assert "defense=soft_prune\n" in mine and "defense.params: dict[str, Any] = {'p': 0.01" in mine
    proc = cli(["--help", "defence"], tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "gradinv-exp: error: --help GROUP='defence' is not allowed: choose one of "
        + ", ".join([*config.GROUPS, "run"])
    ]
