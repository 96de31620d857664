#!/usr/bin/env python
"""Which defenses still stop an attack once the server is malicious? Imprint (Robbing the
Fed) next to the closed form, DLG and IG on the same batch, through secure aggregation,
FedAvg and each defense; the table goes into docs/malicious_server.md.

    python scripts/malicious_server.py [--batch 64] [--bins 128] [--dlg-steps 100] \
        [--ig-steps 300] [--write docs/malicious_server.md]

Offline data: scikit-image's ``lfw_subset`` (``dataset=lfw``: 200 distinct grey faces
and non-faces, 32x32; a run deals 100 to the clients, its batch drawn at random from them,
and 100 to the server, which fits its bins to 64 of them). One batch of ``--batch``
images (one trial: the model seed moves nothing the imprint read-out depends on); the
success rate's Wilson interval is over the batch's images (which are not independent
draws: read it as a lower bound on the uncertainty). Each row is one ``gradinv_exp.run``
into a temporary folder ("attack s": the attack and scoring, metrics.json's ``wall_s``;
"run s": the whole run, model and data included); the script prints the table and, with
``--write``, replaces the part of the page between its markers, stamped with the date,
commit and machine.
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
START, END = "<!-- malicious_server:start -->", "<!-- malicious_server:end -->"
DEFENSES = {
    "none": [],
    "noise 1e-3": ["defense=noise", "defense.sigma=1e-3"],
    "dp clip 1, z 1": ["defense=dp", "defense.noise_multiplier=1.0"],
    "dp clip 1, z 3": ["defense=dp", "defense.noise_multiplier=3.0"],
    "prune 0.2": ["defense=prune", "defense.ratio=0.2"],
    "quantize 4 bits": ["defense=quantize", "defense.bits=4"],
}


def settings(batch: int, bins: int, dlg_steps: int, ig_steps: int) -> list[tuple[str, ...]]:
    """(attacker, protocol, defense, overrides) per row."""
    data = ["dataset=lfw", "threads=1"]
    imprint = ["server=imprint", "attack=imprint", f"server.bins={bins}", *data]
    rows = []
    for name, defense in DEFENSES.items():
        rows.append(("imprint (malicious)", "fedsgd", name, *imprint,
                     f"dataset.batch_size={batch}", *defense))  # fmt: skip
    per_client = f"dataset.batch_size={batch // 4}"
    rows.append(("imprint (malicious)", "fedsgd, clients=4", "none", *imprint, per_client,
                 "clients=4"))  # fmt: skip
    fedavg = ["client=fedavg", "client.local_steps=5"]
    rows.append(("imprint (malicious)", "fedavg, 5 local steps", "none", *imprint,
                 f"dataset.batch_size={batch}", *fedavg))  # fmt: skip
    analytic = ["attack=analytic", "model=mlp", *data]
    rows.append(("closed form (honest, model=mlp)", "fedsgd", "none", *analytic,
                 f"dataset.batch_size={batch}"))  # fmt: skip
    rows.append(("closed form (honest, model=mlp)", "fedsgd, clients=4", "none", *analytic,
                 per_client, "clients=4"))  # fmt: skip
    rows.append(("DLG (honest)", "fedsgd, clients=4", "none", "attack=dlg", *data,
                 per_client, "clients=4", f"attack.iterations={dlg_steps}"))  # fmt: skip
    rows.append(("IG (honest)", "fedsgd, clients=4", "none", "attack=ig", *data, per_client,
                 "clients=4", f"attack.iterations={ig_steps}"))  # fmt: skip
    return rows


def measure(rows: list[tuple[str, ...]]) -> list[dict[str, str]]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (attacker, protocol, defense, *overrides) in enumerate(rows):
            start = time.perf_counter()
            m = gradinv_exp.run(*overrides, out=Path(tmp) / str(i)).metrics
            seconds = time.perf_counter() - start
            eps = m.get("epsilon")
            out.append({
                "attacker": attacker,
                "protocol": protocol,
                "defense": defense + (f" (eps {eps:.2g})" if eps is not None else ""),
                "images recovered (PSNR >= 20 dB)": f"{m['success_rate']:.2f} "
                f"[{m['success_rate_ci_low']:.2f}, {m['success_rate_ci_high']:.2f}]",
                "mean PSNR [dB]": f"{m['psnr']:.1f}",
                "label acc": f"{m['label_acc']:.2f}",
                "attack s": f"{m['wall_s']:.2f}",
                "run s": f"{seconds:.1f}",
            })  # fmt: skip
            print(" | ".join(out[-1].values()), flush=True)
    return out


def markdown(table: list[dict[str, str]], command: str) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{os.cpu_count()} cores {platform.machine()}, load {os.getloadavg()[0]:.1f}"
    head = list(table[0])
    lines = [
        f"*Measured: commit {commit}, {when}; machine: {machine}; `{command}`.*",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(row.values()) + " |" for row in table),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--bins", type=int, default=128)
    parser.add_argument("--dlg-steps", type=int, default=100)
    parser.add_argument("--ig-steps", type=int, default=300)
    parser.add_argument("--write", type=Path, help="markdown page holding the markers")
    args = parser.parse_args()
    rows = settings(args.batch, args.bins, args.dlg_steps, args.ig_steps)
    command = (
        f"python scripts/malicious_server.py --batch {args.batch} --bins {args.bins} "
        f"--dlg-steps {args.dlg_steps} --ig-steps {args.ig_steps}"
    )
    text = markdown(measure(rows), command)
    print(text)
    if args.write:
        page = args.write.read_text()
        before, rest = page.split(START)
        after = rest.split(END)[1]
        args.write.write_text(f"{before}{START}\n{text}\n{END}{after}")


if __name__ == "__main__":
    main()
