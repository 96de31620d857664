#!/usr/bin/env python
"""Is the adaptive quantisation attacker at least as strong as the naive one? Naive and
adaptive DLG on the same (image, model) pairs at each bit width (``--write`` puts the
table into docs/adaptive_attacks.md); printed only: with ``--candidates``, the adaptive
models that were considered, side by side on a smaller set of pairs; with ``--why``,
inside the naive attacker and the former bin model.

    python scripts/adaptive_quantize.py [--trials 20] [--steps 300] [--bits 4 6 8] \
        [--stochastic 8] [--candidates | --why] [--candidate-trials 8] \
        [--candidate-steps 200] [--write docs/adaptive_attacks.md]

Setting: DLG (L-BFGS, labels optimised jointly) on the DLG LeNet, one 32x32 image per
client, ``trials_vary=both``, the data set the audit uses: the default, CIFAR-100 from
index 25, which offline falls back to the bundled crops of photographs (distinct images
drawn at random; the table names the source). Each row of
the main table is two ``gradinv_exp.run`` calls (``attack.adaptive=false`` and ``true``)
on the same pairs; success is PSNR >= 20 dB with its 95% Wilson interval over the pairs.

``--candidates`` runs each model below through the attack engine on the pairs of one
case (built once per bit width as a run builds it), every one from the same start:
the naive objective; the registry's model (``defenses.attacker_model``: the expected
value after a naive warm-up of half the steps, one L-BFGS); the bin alone (the former
model: zero anywhere in the bin); straight-through (the share's quantiser on the dummy,
the identity's gradient); the naive objective plus the bin's hinge; the expected value
(``compression.quantize_target``) from the first step, alone and with the hinge; the bin
started from the naive solution (half the steps each); the bin with its width annealed
from 0 to the full bin in four equal phases. A phase is a fresh L-BFGS from where the
last one ended, from its images and its recovered labels (as logits 10 x one-hot).
``--only NAME ...`` keeps the candidates whose names start so.

``--why`` looks inside the naive attacker, the former bin model and straight-through on
those pairs at the first bit width: per pair, the share of entries in the two bins beside
zero (where the share gives only the sign), the share inside their bin at the start, and
per attacker the PSNR over the steps and the objective at the end (0: a gradient whose
share is the observed one).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

import gradinv_exp
from gradinv_exp.analysis.metrics import psnr
from gradinv_exp.analysis.uncertainty import rate_interval
from gradinv_exp.defenses.compression import QuantizeConfig, quantize_target

REPO = Path(__file__).resolve().parent.parent
START, END = "<!-- adaptive_quantize:start -->", "<!-- adaptive_quantize:end -->"
THRESHOLD = 20.0  # dB: the default success criterion (metrics.success_threshold)
# the data set is the default, CIFAR-100; offline, the bundled crops of photographs
# (metrics.json's data_source), wrapping around their ten images
SETTING = ["model=lenet_dlg", "trials_vary=both", "threads=1", "metrics.lpips=off",
           "defense=quantize"]  # fmt: skip
Model = Callable[[Sequence[Tensor], Sequence[Tensor]], list[Tensor]]


def rate(psnrs: np.ndarray) -> str:
    """``k/n, rate [low, high]`` for PSNR >= THRESHOLD over the pairs."""
    k, n = int((psnrs >= THRESHOLD).sum()), len(psnrs)
    low, high = rate_interval(k, n)
    return f"{k}/{n}, {k / n:.2f} [{low:.2f}, {high:.2f}]"


def pair_psnrs(run: gradinv_exp.Run) -> np.ndarray:
    """PSNR per pair (one image per client) of a finished run."""
    return np.array([float(psnr(t, r).mean()) for t, r in zip(run.truth, run.recon)])


def measure(trials: int, steps: int, settings: list[tuple[int, bool]]) -> list[dict[str, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for bits, stochastic in settings:
            base = [*SETTING, f"defense.bits={bits}", f"defense.stochastic={stochastic}",
                    f"trials={trials}", f"attack.iterations={steps}"]  # fmt: skip
            found, seconds, source = {}, {}, set()
            for adaptive in (False, True):
                start = time.perf_counter()
                out = Path(tmp) / f"{bits}{stochastic}{adaptive}"
                run = gradinv_exp.run(*base, f"attack.adaptive={str(adaptive).lower()}", out=out)
                found[adaptive], seconds[adaptive] = pair_psnrs(run), time.perf_counter() - start
                source.add(run.metrics["data_source"])
            naive, adaptive = found[False], found[True]
            only_naive = int(((naive >= THRESHOLD) & (adaptive < THRESHOLD)).sum())
            only_adaptive = int(((adaptive >= THRESHOLD) & (naive < THRESHOLD)).sum())
            rows.append({
                "bits": str(bits),
                "rounding": "stochastic" if stochastic else "nearest",
                "data": ", ".join(sorted(source)),
                "naive DLG success": rate(naive),
                "adaptive DLG success": rate(adaptive),
                "mean PSNR naive / adaptive (dB)": f"{naive.mean():.1f} / {adaptive.mean():.1f}",
                "pairs only naive / only adaptive breaks": f"{only_naive} / {only_adaptive}",
                "run s naive / adaptive": f"{seconds[False]:.0f} / {seconds[True]:.0f}",
            })  # fmt: skip
            print(" | ".join(rows[-1].values()), flush=True)
    return rows


# --- the candidates ---------------------------------------------------------------------


def bin_only(cfg: QuantizeConfig, fraction: float = 1.0) -> Model:
    """The former model: the share anywhere in the bin (``fraction`` of its width)."""
    width = (2.0 if cfg.stochastic else 1.0) * fraction

    def model(dummy: Sequence[Tensor], shared: Sequence[Tensor]) -> list[Tensor]:
        out = []
        for d, q in zip(dummy, shared):
            h = q.abs().amax() / (2**cfg.bits - 1)
            out.append(q + (d - torch.clamp(d, q - width * h, q + width * h)))
        return out

    return model


def straight_through(cfg: QuantizeConfig) -> Model:
    """The dummy rounded to the share's levels; the gradient passes as the identity's."""
    steps = 2**cfg.bits - 1

    def model(dummy: Sequence[Tensor], shared: Sequence[Tensor]) -> list[Tensor]:
        out = []
        for d, q in zip(dummy, shared):
            s = q.abs().amax()
            level = torch.round(torch.clamp((d + s) / (2 * s) * steps, 0, steps))
            out.append(d + (level / steps * (2 * s) - s - d).detach())
        return out

    return model


def naive_plus_hinge(cfg: QuantizeConfig) -> Model:
    """The naive objective, pushed twice as hard outside the bin."""
    width = 2.0 if cfg.stochastic else 1.0

    def model(dummy: Sequence[Tensor], shared: Sequence[Tensor]) -> list[Tensor]:
        out = []
        for d, q in zip(dummy, shared):
            h = q.abs().amax() / (2**cfg.bits - 1)
            out.append(d + (d - torch.clamp(d, q - width * h, q + width * h)))
        return out

    return model


def expected_value(cfg: QuantizeConfig, hinge: bool = False) -> Model:
    """The dummy matched to ``quantize_target`` from the first step (the registry's model
    without its warm-up); ``hinge``: pushed twice as hard outside the bin."""
    width = 2.0 if cfg.stochastic else 1.0

    def model(dummy: Sequence[Tensor], shared: Sequence[Tensor]) -> list[Tensor]:
        out = []
        for d, q in zip(dummy, shared):
            h = q.abs().amax() / (2**cfg.bits - 1)
            gap = d - torch.clamp(d, q - width * h, q + width * h) if hinge else 0.0
            out.append(d + (q - quantize_target(q, cfg)) + gap)
        return out

    return model


class Case:
    """One case as a run builds it (data, models, shares), attacked by the engine."""

    def __init__(self, overrides: list[str]) -> None:
        from hydra import compose, initialize_config_dir

        from gradinv_exp import client, config
        from gradinv_exp import experiment as ex
        from gradinv_exp.attacks.labels import LABELS, Evidence
        from gradinv_exp.base import streams

        config.register()
        with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
            cfg = config.to_config(compose("config", overrides=overrides))
        torch.set_num_threads(1)
        self.cfg = cfg
        self.images, labels, self.source = ex.load_data(cfg)
        nets, sent = ex.send(cfg, ex.build_models(cfg, torch.device("cpu")))
        _, shared = ex.share(cfg, nets, self.images, labels)
        self.observed = ex.observe(cfg, shared, labels)
        o = self.observed
        self.sim = client.Simulator(sent.model, o.protocol, sent.params, clients=o.clients)
        generator = streams.generator(cfg.seed, "attack")
        self.x0 = torch.randn(o.shape, generator=generator)  # as engine.attack draws them
        mode = LABELS[cfg.attack.labels]
        evidence = Evidence(
            self.sim.model, self.sim.as_gradient(list(o.update)), o.shape[1], o.num_classes,
            o.labels, generator, o.shape[2:],
        )  # fmt: skip
        self.y0 = mode.start(evidence, 1)
        self.optimised = mode.optimised

    def attack(
        self, phases: list[tuple[Model | None, int]], every: int | None = None
    ) -> tuple[np.ndarray, list[Trace]]:
        """PSNR per pair after the phases (model, steps), each from where the last ended
        (its images, and its recovered labels as logits of a near one-hot distribution),
        and (with ``every``) a ``Trace`` every ``every`` steps of the last phase."""
        from gradinv_exp.attacks import engine

        x, y = self.x0, self.y0
        traces: list[Trace] = []
        for model, steps in phases:
            cfg = dataclasses.replace(
                self.cfg.attack, iterations=steps, snapshot_every=every or steps
            )
            problem = engine.build_problem(
                self.sim, self.observed.update, x, y, cfg, self.cfg.optimizer,
                optimised=self.optimised, models=[model] * len(self.observed.update[0]),
            )  # fmt: skip
            traces = []

            def trace(step: int, loss: Tensor, images: Tensor, traces=traces) -> None:
                traces.append(Trace(step, loss.numpy().copy(), self.psnr(images)))

            result = engine.optimise(problem, cfg, trace)
            x = result.images.detach().clone()
            if self.optimised:
                y = 10.0 * torch.nn.functional.one_hot(result.labels, y.shape[-1]).float()
        return self.psnr(x), traces

    def psnr(self, images: Tensor) -> np.ndarray:
        return np.array([float(psnr(t, r).mean()) for t, r in zip(self.images, images)])

    def gradients(self, x: Tensor, y: Tensor) -> list[Tensor]:
        """The simulated share of dummies ``x`` with label logits ``y``, one ``(T, ...)``
        tensor per parameter."""
        with torch.no_grad():
            return self.sim(x, torch.softmax(y, -1) if self.optimised else y)


@dataclasses.dataclass
class Trace:
    step: int
    objective: np.ndarray  # (T,)
    psnr: np.ndarray  # (T,)


def candidates(
    trials: int, steps: int, settings: list[tuple[int, bool]], only: list[str]
) -> list[dict[str, str]]:
    from gradinv_exp import defenses

    rows = []
    for bits, stochastic in settings:
        over = [*SETTING, f"defense.bits={bits}", f"defense.stochastic={stochastic}",
                f"trials={trials}"]  # fmt: skip
        case = Case(over)
        cfg = case.cfg.defense
        assert isinstance(cfg, QuantizeConfig)
        half = steps // 2
        models: dict[str, list[tuple[Model | None, int]]] = {
            "naive": [(None, steps)],
            "registry's model (expected value after a naive warm-up)": [
                (defenses.attacker_model(cfg), steps)
            ],
            "bin alone (former model)": [(bin_only(cfg), steps)],
            "straight-through": [(straight_through(cfg), steps)],
            "naive + hinge": [(naive_plus_hinge(cfg), steps)],
            "expected value alone": [(expected_value(cfg), steps)],
            "expected value + hinge": [(expected_value(cfg, hinge=True), steps)],
            "bin from the naive solution": [(None, half), (bin_only(cfg), steps - half)],
            "bin, width annealed 0 to 1": [
                (bin_only(cfg, f), steps // 4) for f in (0.0, 1 / 3, 2 / 3, 1.0)
            ],
        }
        if only:
            models = {k: v for k, v in models.items() if any(k.startswith(o) for o in only)}
        for name, phases in models.items():
            start = time.perf_counter()
            found, _ = case.attack(phases)
            rows.append({
                "bits": f"{bits}{' (stochastic)' if stochastic else ''}",
                "adaptive model": name,
                "data": case.source,
                "success": rate(found),
                "mean PSNR (dB)": f"{found.mean():.1f}",
                "PSNR per pair (dB)": " ".join(f"{v:.0f}" for v in found),
                "s": f"{time.perf_counter() - start:.0f}",
            })  # fmt: skip
            print(" | ".join(rows[-1].values()), flush=True)
    return rows


def why(trials: int, steps: int, bits: int) -> list[dict[str, str]]:
    """Inside the naive attacker, the former bin model and straight-through (``--why``)."""

    case = Case([*SETTING, f"defense.bits={bits}", f"trials={trials}"])
    cfg = case.cfg.defense
    assert isinstance(cfg, QuantizeConfig)
    shared = case.observed.update

    def fraction(mask: Callable[[Tensor, Tensor], Tensor], grads: list[Tensor]) -> np.ndarray:
        """Per pair, the share of all entries where ``mask(g, q)`` holds."""
        hits = sum(mask(g, q).flatten(1).sum(1) for g, q in zip(grads, shared))
        return (hits / sum(q[0].numel() for q in shared)).numpy()

    def half(q: Tensor) -> Tensor:
        return (q.abs().flatten(1).amax(1) / (2**bits - 1)).view(-1, *[1] * (q.dim() - 1))

    def inside(g: Tensor, q: Tensor) -> Tensor:
        return (g - q).abs() <= half(q) * (1 + 1e-4)

    beside = fraction(lambda g, q: q.abs() < 2 * half(q), shared)
    start = fraction(inside, case.gradients(case.x0, case.y0))
    rows = [{"pair": str(t), "entries beside zero": f"{beside[t]:.2f}",
             "entries inside their bin at the start": f"{start[t]:.2f}"}
            for t in range(trials)]  # fmt: skip
    marks = [m for m in (50, 100, 150, steps) if m <= steps]
    for name, model in [("naive", None), ("bin alone (former model)", bin_only(cfg)),
                        ("straight-through", straight_through(cfg))]:  # fmt: skip
        _, traces = case.attack([(model, steps)], every=50)
        at = {tr.step: tr for tr in traces}
        for t in range(trials):
            psnrs = " / ".join(f"{at[m].psnr[t]:.1f}" for m in marks if m in at)
            rows[t][f"{name}: PSNR at {'/'.join(map(str, marks))} (objective at the end)"] = (
                f"{psnrs} ({traces[-1].objective[t]:.1e})"
            )
        print(f"{name}: PSNR {np.round(traces[-1].psnr, 1)}", flush=True)
    return rows


def markdown(table: list[dict[str, str]], command: str) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = (
        f"{os.cpu_count()} cores {platform.machine()} (shared), load {os.getloadavg()[0]:.1f}, "
        f"torch {torch.__version__}, one thread"
    )
    head = list(table[0])
    return "\n".join([
        f"*Measured: commit {commit}, {when}; machine: {machine}; `{command}`.*",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(row.values()) + " |" for row in table),
    ])  # fmt: skip


def replace(page: Path, start: str, end: str, text: str) -> None:
    before, rest = page.read_text().split(start)
    page.write_text(f"{before}{start}\n{text}\n{end}{rest.split(end)[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="(image, model) pairs")
    parser.add_argument("--steps", type=int, default=300, help="L-BFGS steps (DLG's 300)")
    parser.add_argument("--bits", type=int, nargs="*", default=[4, 6, 8])
    parser.add_argument("--stochastic", type=int, nargs="*", default=[8],
                        help="bit widths also measured with stochastic rounding")  # fmt: skip
    parser.add_argument("--candidates", action="store_true", help="the candidates (printed)")
    parser.add_argument("--why", action="store_true", help="inside the former model (printed)")
    parser.add_argument("--candidate-trials", type=int, default=8)
    parser.add_argument("--candidate-steps", type=int, default=200)
    parser.add_argument("--only", nargs="*", default=[], help="candidates whose names start so")
    parser.add_argument("--write", type=Path, help="markdown page holding the markers")
    args = parser.parse_args()
    settings = [(b, False) for b in args.bits] + [(b, True) for b in args.stochastic]
    if args.why:
        rows = why(args.candidate_trials, args.candidate_steps, args.bits[0])
        print(markdown(rows, f"python scripts/adaptive_quantize.py --why --bits {args.bits[0]}"))
        return
    if args.candidates:
        rows = candidates(args.candidate_trials, args.candidate_steps, settings, args.only)
        command = (
            f"python scripts/adaptive_quantize.py --candidates --candidate-trials "
            f"{args.candidate_trials} --candidate-steps {args.candidate_steps} --bits "
            f"{' '.join(map(str, args.bits))} --stochastic {' '.join(map(str, args.stochastic))}"
        )
        print(markdown(rows, command))
        return
    rows = measure(args.trials, args.steps, settings)
    command = (
        f"python scripts/adaptive_quantize.py --trials {args.trials} --steps {args.steps} "
        f"--bits {' '.join(map(str, args.bits))} --stochastic "
        f"{' '.join(map(str, args.stochastic))}"
    )
    text = markdown(rows, command)
    print(text)
    if args.write:
        replace(args.write, START, END, text)


if __name__ == "__main__":
    main()
