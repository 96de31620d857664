"""Privacy against utility: attack metrics joined with test accuracy per defense setting."""

import pandas as pd

from gradinv_exp import compare
from gradinv_exp.analysis import tradeoff


def test_privacy_utility_joins_defense_settings_and_averages_runs(tmp_path):
    runs = pd.DataFrame(
        {
            "defense": ["none", "prune", "prune", "prune", "noise"],
            "strength": [float("nan"), 0.2, 0.2, 0.5, 0.01],
            "psnr": [40.0, 20.0, 30.0, 10.0, 12.0],
        }
    )
    utility = pd.DataFrame(
        {
            "defense.name": ["none", "prune", "prune", "dp"],
            "defense.ratio": [None, 0.2, 0.9, None],
            "accuracy": [0.9, 0.85, 0.6, 0.7],
            "epsilon": [None, None, None, 4.4],
        }
    )
    joined = tradeoff.join(runs, utility, "psnr").set_index("setting")
    assert sorted(joined.index) == ["none", "prune(0.2)"]  # only settings on both sides
    assert joined.loc["prune(0.2)", "psnr"] == 25.0 and joined.loc["prune(0.2)", "runs"] == 2
    assert joined.loc["none", "accuracy"] == 0.9
    assert compare.privacy_utility(runs, utility, "psnr", tmp_path) == 0
    assert (tmp_path / "privacy_utility.png").stat().st_size > 0
    assert len(pd.read_csv(tmp_path / "privacy_utility.csv")) == 2


def test_setting_names_a_defense_by_its_strength():
    assert tradeoff.setting("prune", 0.2) == "prune(0.2)"
    assert tradeoff.setting("none", None) == "none" == tradeoff.setting("none", float("nan"))
