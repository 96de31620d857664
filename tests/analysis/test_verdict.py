"""Verdicts (compare --verdict, and at the end of a sweep) on run folders whose verdict is
known: the strongest attacker, its interval against the threshold, the costs."""

import json

import pandas as pd
import pytest
import yaml

from gradinv_exp import compare
from gradinv_exp.__main__ import summarise
from gradinv_exp.analysis import summary, uncertainty, verdict


def run(path, *, defense, strength, attack="dlg", adaptive=False, successes=0, pairs=20,
        hit=30.0, **cost):  # fmt: skip
    """A finished job folder: ``successes`` of ``pairs`` one-image trials at ``hit`` dB,
    the rest at 8 dB (success: PSNR >= 20 dB)."""
    key, value = strength
    psnr = [[hit]] * successes + [[8.0]] * (pairs - successes)
    cfg = {"defense.name": defense, f"defense.{key}": value, "attack.name": attack,
           "attack.adaptive": adaptive, "seed": 0}  # fmt: skip
    overrides = [f"defense={defense}", f"defense.{key}={value}", f"attack={attack}",
                 f"attack.adaptive={str(adaptive).lower()}"]  # fmt: skip
    metrics = {"status": "ok", "psnr": sum(p[0] for p in psnr) / pairs,
               "per_image": {"psnr": psnr}, "config": cfg, **cost}  # fmt: skip
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (path / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def sweep(tmp_path):
    """prune 0.2: naive 0/20, adaptive 15/20; prune 0.9: both 0/80; quantize 4 bits (IG):
    naive 2/20 at 30 dB vs adaptive 1/10 at 40 dB (a tie on success, adaptive's PSNR
    higher)."""
    folder = tmp_path / "sweep"
    prune2, prune9 = ("ratio", 0.2), ("ratio", 0.9)
    run(folder / "0", defense="prune", strength=prune2, defense_rel_error=0.02)
    run(folder / "1", defense="prune", strength=prune2, adaptive=True, successes=15,
        defense_rel_error=0.04)  # fmt: skip
    run(folder / "2", defense="prune", strength=prune9, pairs=80)
    run(folder / "3", defense="prune", strength=prune9, adaptive=True, pairs=80)
    run(folder / "4", defense="quantize", strength=("bits", 4), attack="ig", successes=2)
    run(folder / "5", defense="quantize", strength=("bits", 4), attack="ig", adaptive=True,
        successes=1, pairs=10, hit=40.0)  # fmt: skip
    return folder


def table(folder, threshold=uncertainty.VERDICT_THRESHOLD) -> pd.DataFrame:
    frame, problems = summary.collect([folder])
    assert not problems
    return verdict.verdict(frame, threshold).set_index(["defense", "strength"])


def test_the_adaptive_attacker_is_strongest_and_the_defense_does_not_stop_it(sweep):
    row = table(sweep).loc[("prune", 0.2)]
    assert (row["naive_successes"], row["naive_pairs"]) == (0, 20)
    assert (row["adaptive_successes"], row["adaptive_pairs"]) == (15, 20)
    assert (row["adaptive_low"], row["adaptive_high"]) == uncertainty.rate_interval(15, 20)
    assert row["strongest"] == "adaptive" and row["against"] == "adaptive dlg"
    assert row["verdict"] == "does not stop it"  # lower end 0.53 > 0.05
    assert row["defense_rel_error"] == pytest.approx(0.03)  # mean over the setting's runs


def test_no_success_stops_it_only_when_the_interval_ends_below_the_threshold(sweep):
    low_n = table(sweep, threshold=0.05)
    assert low_n.loc[("prune", 0.9), "verdict"] == "stops it"  # 0/80: ends at 0.046
    assert uncertainty.rate_interval(0, 80)[1] <= 0.05 < uncertainty.rate_interval(0, 20)[1]
    assert table(sweep, threshold=0.04).loc[("prune", 0.9), "verdict"] == "inconclusive"


def test_ties_on_success_go_to_the_higher_psnr_and_the_family_is_named(sweep):
    row = table(sweep).loc[("quantize", 4)]
    assert row["naive_success"] == row["adaptive_success"] == 0.1
    assert row["naive_psnr"] == pytest.approx((2 * 30 + 18 * 8) / 20)
    assert row["adaptive_psnr"] == pytest.approx((40 + 9 * 8) / 10)  # 11.2 > 10.2
    assert row["strongest"] == "adaptive" and row["attack"] == "ig"
    assert row["verdict"] == "inconclusive"  # [0.02, 0.40] contains 0.05


def test_one_attacker_measured_is_named_as_the_only_one(tmp_path):
    run(tmp_path / "s" / "0", defense="prune", strength=("ratio", 0.5), successes=3)
    row = table(tmp_path / "s").loc[("prune", 0.5)]
    assert row["against"] == "naive dlg (adaptive not measured)"
    assert pd.isna(row["adaptive_success"])


def test_compare_verdict_writes_csv_and_markdown(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert compare.main([str(sweep), "--verdict", "--out", str(out)]) == 0
    written = pd.read_csv(out / "verdict.csv")
    assert len(written) == 3 and set(written["verdict"]) == {
        "does not stop it", "stops it", "inconclusive"}  # fmt: skip
    text = (out / "verdict.md").read_text()
    assert "0.75 [0.53, 0.89] (15/20)" in text and "| prune" in text
    assert "0.75 [0.53, 0.89] (15/20)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        compare.main([str(sweep), "--verdict", "--threshold", "2"])


def test_the_end_of_a_sweep_writes_its_verdict(sweep):
    _, unwritten, counts = summarise(sweep)
    assert unwritten is None and counts["finished"] == 6
    assert len(pd.read_csv(sweep / "verdict.csv")) == 3
    assert (sweep / "verdict.md").exists()


def test_a_run_found_in_two_folders_counts_its_pairs_once(sweep, tmp_path):
    """compare --verdict over a sweep and a copy of it: every (image, model) pair of the
    copy is one of the sweep's, so the counts are those of the sweep alone."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(sweep, copy)
    frame, _ = summary.collect([sweep, copy])
    assert len(frame) == 12
    both = verdict.verdict(frame).set_index(["defense", "strength"])
    alone = table(sweep)
    for column in ("naive_successes", "naive_pairs", "adaptive_successes", "adaptive_pairs"):
        assert both[column].tolist() == alone[column].tolist(), column
    assert both.loc[("prune", 0.2), "adaptive_pairs"] == 20
    pooled = summary.pool(frame, ["defense", "strength", "config.attack.adaptive"])
    assert pooled["trials"].tolist() == [20, 20, 80, 80, 20, 10]
    assert pooled["runs"].tolist() == [1] * 6


def test_utility_of_two_seeds_joins_as_mean_and_range_and_draws_the_figure(sweep, tmp_path):
    """prune 0.2 trained under two seeds (0.6, 0.8), prune 0.9 under one, quantize 4 under
    none: the table carries mean and range; the figure has one point per setting with an
    accuracy, its strongest attacker's interval as the bar."""
    utility = pd.DataFrame({
        "defense.name": ["prune", "prune", "prune"],
        "defense.ratio": [0.2, 0.2, 0.9],
        "accuracy": [0.6, 0.8, 0.3],
    })  # fmt: skip
    frame, _ = summary.collect([sweep])
    joined = verdict.verdict(frame, utility=utility).set_index(["defense", "strength"])
    row = joined.loc[("prune", 0.2)]
    assert (row["accuracy"], row["accuracy_low"], row["accuracy_high"], row["seeds"]) == (
        pytest.approx(0.7), 0.6, 0.8, 2)  # fmt: skip
    assert pd.isna(joined.loc[("quantize", 4), "accuracy"])
    text = verdict.markdown(joined.reset_index())
    assert "0.70 [0.60, 0.80] (2 seeds)" in text and "0.300" in text
    points = verdict.strongest(joined.reset_index()).set_index(["defense", "strength"])
    assert list(points.index) == [("prune", 0.9), ("prune", 0.2)]  # by accuracy
    assert points.loc[("prune", 0.2), "success"] == 0.75  # the adaptive attacker's
    assert points.loc[("prune", 0.9), "verdict"] == "stops it"
    out = tmp_path / "out"
    path = tmp_path / "utility.csv"
    utility.to_csv(path, index=False)
    assert compare.main([str(sweep), "--verdict", "--utility", str(path), "--out", str(out)]) == 0
    assert (out / "verdict.png").stat().st_size > 0


def test_without_utility_no_figure_is_written(sweep, tmp_path):
    frame, _ = summary.collect([sweep])
    written = verdict.write(verdict.verdict(frame), tmp_path)
    assert [p.name for p in written] == ["verdict.csv", "verdict.md"]
    assert not (tmp_path / "verdict.png").exists()


def test_a_defense_with_nothing_to_model_names_the_naive_attacker_as_the_adaptive(tmp_path):
    run(tmp_path / "s" / "0", defense="noise", strength=("sigma", 0.01), pairs=80)
    row = table(tmp_path / "s").loc[("noise", 0.01)]
    assert row["against"] == "naive dlg (= adaptive: nothing to model)"
    assert row["verdict"] == "stops it"


def test_a_family_without_the_option_is_what_its_registry_says(tmp_path):
    """The learned attacker has no naive/adaptive option; it trains on the defense's own
    outputs, so its runs count as adaptive and no naive run is asked for."""
    folder = tmp_path / "s" / "0"
    run(folder, defense="sign", strength=("name", "sign"), attack="learned", successes=8)
    metrics = json.loads((folder / "metrics.json").read_text())
    del metrics["config"]["attack.adaptive"]
    metrics["config"]["attack.family"] = "learned"
    (folder / "metrics.json").write_text(json.dumps(metrics))
    row = verdict.verdict(summary.collect([tmp_path / "s"])[0]).iloc[0]
    assert row["against"] == "adaptive learned" and row["adaptive_successes"] == 8
    assert verdict.attacker(float("nan"), "optimization") == "naive"  # reads cfg.adaptive
