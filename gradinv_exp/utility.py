"""What a defense costs in training: federated learning with defended updates.

``python -m gradinv_exp.utility [overrides]`` trains ``model`` on ``dataset`` (offline by
default: scikit-image's lfw_subset, faces vs non-faces) for ``rounds`` federated rounds,
once per defense in ``defenses``, and reports test accuracy per round. Clients follow the
same ``client`` protocol as the attack (FedSGD gradients, or FedAvg updates after local
steps), the defense distorts what each shares, and the server averages (``train``), so
the privacy-utility table compares like with like. Every defense sees the same model
init, data split and batch order (seeded streams), so accuracies differ only by the
defense.

Writes ``utility.csv`` (one row per defense; its config as flat ``defense.*`` keys like
metrics.json's ``config``, ``accuracy`` (``settled``: the mean over the last tenth of the
rounds), ``accuracy_final``, ``accuracy_round_<r>``, mean defense cost, DP epsilon per
release), ``utility.png`` and prints the table.
"""

from __future__ import annotations

import itertools
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor, nn

from gradinv_exp import config, data, defenses
from gradinv_exp.base.options import ConfigError
from gradinv_exp.base.streams import generator
from gradinv_exp.client import CLIENTS, Client, share
from gradinv_exp.config import UtilityConfig
from gradinv_exp.defenses import DefenseConfig
from gradinv_exp.experiment import build_model
from gradinv_exp.runs import artifacts
from gradinv_exp.runs.preflight import hydra_message

log = logging.getLogger(__name__)


def split(count: int, cfg: UtilityConfig) -> tuple[Tensor, list[Tensor]]:
    """Seeded test indices and one training shard per client (dealt in turn): the test
    part of ``data.partition`` and its clients' part, disjoint (no server part: federated
    training has no server images)."""
    test = int(np.ceil(cfg.test_fraction * count))
    parts = data.partition(
        count, server=0, test=test, generator=generator(cfg.seed, "utility-split")
    )
    return parts.test, [parts.clients[c :: cfg.clients] for c in range(cfg.clients)]


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    return float((model(images).argmax(-1) == labels).double().mean())


def train(
    cfg: UtilityConfig, defense: DefenseConfig, images: Tensor, labels: Tensor
) -> dict[str, Any]:
    """Federated training with ``defense`` on everything a client shares.

    Each round every client draws ``dataset.batch_size`` images from its shard, computes
    what its protocol shares (``cfg.client``: the same as in the attack), the defense
    distorts it, and the server applies the mean over clients: FedSGD moves the weights
    by ``-lr`` x the mean shared gradient, FedAvg adds the mean shared update (its
    clients' ``local_lr`` set the step). ``images`` (N, C, H, W) in [0, 1], ``labels``
    (N,). Returns test accuracy per round and the defense's mean cost over all shares.
    """
    model = build_model(cfg)
    test, shards = split(len(images), cfg)
    onehot = nn.functional.one_hot(labels, cfg.dataset.num_classes).float()
    batches = generator(cfg.seed, "utility-batches")
    noise = generator(cfg.seed, "defense")
    protocol = CLIENTS[cfg.client.name]
    step = 1.0 if protocol.descent else -cfg.lr  # an update already holds its step
    costs: list[dict[str, float]] = []
    per_round = []
    for _ in range(cfg.rounds):
        shares = []
        for shard in shards:
            pick = shard[torch.randperm(len(shard), generator=batches)]
            pick = pick[: cfg.dataset.batch_size]
            who = Client(model, images[pick], onehot[pick], per_example=protocol.per_example)
            true = share(who, cfg.client)
            shares.append(defenses.apply(true, defense, generator=noise, client=who))
            costs.append(defenses.cost(true, shares[-1]))
        with torch.no_grad():
            for p, *each in zip(model.parameters(), *shares):
                p.add_(step * torch.stack(each).mean(0))
        per_round.append(accuracy(model, images[test], labels[test]))
    mean_cost = pd.DataFrame(costs).mean().to_dict()
    return {"accuracy": settled(per_round), "per_round": per_round, **mean_cost}


def settled(per_round: list[float]) -> float:
    """The accuracy a training reached: the mean test accuracy over the last tenth of the
    rounds (at least one). One round's accuracy is a poor summary under FedSGD: on the
    crops, the sigmoid DLG LeNet's (4 clients, batch 32, lr 0.05) ranged over 0.47-0.79 in
    rounds 901-1000, moving by up to 0.14 from one round to the next."""
    tail = per_round[-max(1, len(per_round) // 10) :]
    return float(np.mean(tail))


def row(cfg: UtilityConfig, defense: DefenseConfig, result: dict[str, Any]) -> dict[str, Any]:
    """One utility.csv row; the defense's fields use metrics.json's flat ``defense.*`` keys."""
    report = defenses.report(defense)
    flat = pd.json_normalize({"defense": asdict(defense)}).to_dict("records")[0]
    out: dict[str, Any] = {"defense": report.pop("defense_steps"), **flat}
    out |= {"accuracy": result["accuracy"], "accuracy_final": result["per_round"][-1]}
    out |= {k: result[k] for k in ("defense_rel_error", "defense_cosine", "defense_changed")}
    out |= report  # epsilon, delta, accountant of one release, for DP
    out |= {f"accuracy_round_{r + 1}": a for r, a in enumerate(result["per_round"])}
    out |= {
        "model.name": cfg.model.name,
        "dataset.name": cfg.dataset.name,
        "dataset.batch_size": cfg.dataset.batch_size,
        **pd.json_normalize({"client": asdict(cfg.client)}).to_dict("records")[0],
        **{k: getattr(cfg, k) for k in ("rounds", "clients", "lr", "seed")},
    }
    return out


def figure(table: pd.DataFrame) -> Figure:
    """Test accuracy against the round (integer ticks), one line per distinct curve:
    defenses whose accuracies are the same in every round share a line and its legend
    entry, one name a line (drawn apart, the later would hide the earlier); the one with
    ``none`` is the baseline, black and dashed, drawn on top. The legend, with each final
    accuracy, sits beside the axes."""
    fig = Figure(figsize=(9, 4), layout="constrained")  # room for the legend outside
    ax = fig.subplots()
    rounds = [c for c in table.columns if c.startswith("accuracy_round_")]
    curves: dict[tuple[float, ...], list[str]] = {}
    for _, r in table.iterrows():
        curves.setdefault(tuple(r[rounds].to_numpy(float)), []).append(str(r["defense"]))
    styles = itertools.cycle(itertools.product(("o", "s", "^", "D", "v"), ("-", "--", "-.")))
    x = range(1, len(rounds) + 1)
    for values, names in curves.items():
        label = "\n".join(names) + f": {values[-1]:.2f}"
        if any(n.split("(")[0] == "none" for n in names):
            ax.plot(x, values, "k--", linewidth=2, zorder=3, label=label)
            continue
        marker, line = next(styles)
        ax.plot(x, values, marker=marker, linestyle=line, markersize=4, label=label)
    ax.set(xlabel="federated round", ylabel="test accuracy", title="utility per defense")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def utility(cfg: UtilityConfig, out_dir: Path) -> pd.DataFrame:
    """Train once per defense; write utility.csv and utility.png into ``out_dir``."""
    torch.set_num_threads(cfg.threads)
    size = len(data.open_dataset(cfg.dataset)[0]) - (cfg.dataset.index or 0)
    images, labels, source = data.load(cfg.dataset, min(size, cfg.samples or size))
    if source != cfg.dataset.name:  # the offline crops are not this labelled task
        raise ConfigError(
            f"dataset.name={cfg.dataset.name} is not available and training needs real "
            "labelled data: use dataset=lfw (offline) or provide the data set"
        )
    log.info(
        "utility: %d %s images, %d %s clients x %d rounds, batch %d",
        len(images), source, cfg.clients, cfg.client, cfg.rounds, cfg.dataset.batch_size,
    )  # fmt: skip
    rows = []
    for defense in cfg.defenses:
        result = train(cfg, defense, images, labels)
        rows.append(row(cfg, defense, result))
        log.info("%-45s accuracy %.3f", rows[-1]["defense"], result["accuracy"])
    table = pd.DataFrame(rows)
    artifacts.write_csv(out_dir / "utility.csv", table)
    artifacts.save_figure(out_dir / "utility.png", figure(table))
    return table


SHOWN = ["defense", "accuracy", "epsilon", "defense_cosine", "defense_rel_error"]


@hydra.main(version_base="1.3", config_path=str(config.CONF_DIR), config_name="utility")
def hydra_main(cfg: DictConfig) -> None:
    try:
        typed = config.to_config(cfg, UtilityConfig)
    except (ConfigError, OmegaConfBaseException) as err:
        fail(hydra_message(err))
    table = utility(typed, Path(HydraConfig.get().runtime.output_dir))
    shown = table[[c for c in SHOWN if c in table.columns]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def fail(message: str) -> None:
    print(f"gradinv-exp utility: error: {message}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    config.register()
    hydra_main()


if __name__ == "__main__":
    main()
