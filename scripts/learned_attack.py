#!/usr/bin/env python
"""Does a learned attacker break the defenses that stop optimisation attacks? The learned
inversion attack (``attack=learned``) beside naive and adaptive DLG on the same (image,
model) pairs, under noise, DP, quantisation, sign and pruning; the table goes into
docs/learned_attack.md.

    python scripts/learned_attack.py [--trials 16] [--dlg-steps 300] [--updates 2048] \
        [--steps 1000] [--vary images] [--cache DIR] [--write docs/learned_attack.md]
    python scripts/learned_attack.py --baselines RUN_DIR

Every row attacks the same ``--trials`` pairs (``--vary images``, the default: trial t the
image drawn t-th from the clients' part of the offline crops on the DLG LeNet of the run's
seed; ``--vary both``: also the LeNet of seed t; one image per client, 32x32 colour), so
the three attackers face the same images, models and defended updates. The learned
attacker trains one inverter per model and defense (``--vary images``: one per defense,
which is what keeps the table to about an hour on 2 cores)
(``--updates`` simulated updates, ``--steps`` Adam steps; the other settings are the
preset's: 2048 auxiliary images from the server's part, a 1024-dimensional sketch, two
hidden layers of 512) into ``--cache`` (default: a temporary folder, so every inverter is
trained and its time measured). DLG is the preset (300 L-BFGS steps, joint labels), naive
(``attack.adaptive=false``) and adaptive (``true``: the defense's registered model);
noise has no model, so its adaptive attacker is the naive one and is not run again.
Success is PSNR >= 20 dB, with its Wilson interval over the pairs. The script prints the
table and, with ``--write``, replaces the part of the page between its markers, stamped
with the date, commit, machine and command. ``--baselines RUN_DIR`` prints instead what
two flat guesses score on the images of one such run (``baselines``): 20 dB is within
reach of a flat colour on smooth crops.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import gradinv_exp

REPO = Path(__file__).resolve().parent.parent
START, END = "<!-- learned_attack:start -->", "<!-- learned_attack:end -->"
DEFENSES = {
    "none": [],
    "noise 1e-3": ["defense=noise", "defense.sigma=1e-3"],
    "noise 1e-2": ["defense=noise", "defense.sigma=1e-2"],
    "dp clip 1, z 0.1": ["defense=dp", "defense.noise_multiplier=0.1"],
    "dp clip 1, z 1": ["defense=dp", "defense.noise_multiplier=1.0"],
    "quantize 4 bits": ["defense=quantize", "defense.bits=4"],
    "sign": ["defense=sign"],
    "prune 0.5": ["defense=prune", "defense.ratio=0.5"],
}
HAS_MODEL = {"none": False, "noise 1e-3": False, "noise 1e-2": False}  # else: True


def run(overrides: list[str], out: Path) -> tuple[dict, float]:
    start = time.perf_counter()
    metrics = gradinv_exp.run(*overrides, out=out).metrics
    return metrics, time.perf_counter() - start


def cell(m: dict) -> str:
    """``0.44 [0.23, 0.67] (7/16), 19.8 dB``: success, interval, count, mean PSNR."""
    n = m["trials"]
    k = round(m["success_rate"] * n)
    return (
        f"{m['success_rate']:.2f} [{m['success_rate_ci_low']:.2f}, "
        f"{m['success_rate_ci_high']:.2f}] ({k}/{n}), {m['psnr']:.1f} dB"
    )


def measure(args: argparse.Namespace, cache: Path, tmp: Path) -> list[dict[str, str]]:
    common = ["dataset=crops", "model=lenet_dlg", f"trials={args.trials}",
              f"trials_vary={args.vary}", "threads=1", "metrics.lpips=off"]  # fmt: skip
    learned = ["attack=learned", f"attack.updates={args.updates}", f"attack.steps={args.steps}",
               f"attack.cache_dir={cache}"]  # fmt: skip
    dlg = ["attack=dlg", f"attack.iterations={args.dlg_steps}"]
    rows = []
    for i, (name, defense) in enumerate(DEFENSES.items()):
        m_learned, s_learned = run([*common, *defense, *learned], tmp / f"{i}-learned")
        m_naive, s_naive = run([*common, *defense, *dlg], tmp / f"{i}-naive")
        if HAS_MODEL.get(name, True):
            m_adaptive, _ = run([*common, *defense, *dlg, "attack.adaptive=true"], tmp / f"{i}-a")
            adaptive = cell(m_adaptive)
        else:
            adaptive = "= naive (no model)"
        rows.append({
            "defense": name,
            "learned": cell(m_learned),
            "naive DLG": cell(m_naive),
            "adaptive DLG": adaptive,
            "learned label acc": f"{m_learned['label_acc']:.2f}",
            "learned: train s per inverter": (
                f"{m_learned['learned.train_s'] / max(m_learned['learned.inverters'], 1):.0f}"
            ),
            "learned: train MSE": f"{m_learned['learned.train_mse']:.4f}",
            "naive DLG s": f"{s_naive:.0f}",
        })  # fmt: skip
        print(" | ".join(rows[-1].values()), flush=True)
    return rows


def baselines(run_dir: Path, aux: int = 2048) -> list[dict[str, str]]:
    """What a reconstruction that knows nothing, or only each image's mean colour,
    scores on the attacked images of the run in ``run_dir`` (its images.npz): the mean
    of ``aux`` crops drawn at random (seed 0; the auxiliary set's mean, as the server's
    part is a random half of the same crops), and each image filled with its own mean
    colour (an oracle: an attacker learns at most that much from a flat guess)."""
    import numpy as np
    import torch
    from hydra import compose, initialize_config_dir

    from gradinv_exp import config, data
    from gradinv_exp.analysis.metrics import psnr

    config.register()
    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
        cfg = config.to_config(compose("config", overrides=["dataset=crops"]))
    crops, _ = data.open_dataset(cfg.dataset)
    picked = np.random.default_rng(0).choice(len(crops), aux, replace=False)
    mean = torch.stack([crops[int(i)][0] for i in picked]).mean(0)
    truth = torch.tensor(np.load(run_dir / "images.npz")["truth"]).flatten(0, 1)
    guesses = {
        "the auxiliary images' mean": mean.expand_as(truth),
        "each image's own mean colour (oracle)": truth.mean(dim=(2, 3), keepdim=True).expand_as(
            truth
        ),
    }
    rows = []
    for name, guess in guesses.items():
        values = psnr(truth, guess)
        k, n = int((values >= 20).sum()), len(values)
        rows.append({"guess": name, "PSNR >= 20 dB": f"{k}/{n}",
                     "mean PSNR (dB)": f"{values.mean():.1f}"})  # fmt: skip
    return rows


def markdown(table: list[dict[str, str]], command: str, started: str) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    ended = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = (
        f"{os.cpu_count()} cores {platform.machine()} (shared), one torch thread, "
        f"load {os.getloadavg()[0]:.1f} at the end"
    )
    head = list(table[0])
    lines = [
        f"*Measured: commit {commit}, {started} - {ended}; machine: {machine}; `{command}`.*",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(row.values()) + " |" for row in table),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--dlg-steps", type=int, default=300)
    parser.add_argument("--updates", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--vary", choices=["images", "both"], default="images",
                        help="what the pairs vary: the image (one model) or both")  # fmt: skip
    parser.add_argument("--cache", type=Path, help="inverter cache (default: a temporary one)")
    parser.add_argument("--write", type=Path, help="markdown page holding the markers")
    parser.add_argument("--baselines", type=Path, metavar="RUN_DIR",
                        help="only print what flat guesses score on that run's images")  # fmt: skip
    args = parser.parse_args()
    if args.baselines:
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
        command = f"python scripts/learned_attack.py --baselines {args.baselines}"
        print(markdown(baselines(args.baselines), command, started))
        return
    command = (
        f"python scripts/learned_attack.py --trials {args.trials} --dlg-steps {args.dlg_steps} "
        f"--updates {args.updates} --steps {args.steps} --vary {args.vary}"
    )
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp) / "cache"
        text = markdown(measure(args, cache, Path(tmp)), command, started)
    print(text)
    if args.write:
        page = args.write.read_text()
        before, rest = page.split(START)
        after = rest.split(END)[1]
        args.write.write_text(f"{before}{START}\n{text}\n{END}{after}")


if __name__ == "__main__":
    main()
