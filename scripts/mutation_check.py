"""Plant plausible bugs one at a time and check that the fast tests catch each of them.

A test suite can be green and still miss wrong results: the glue between well-tested
parts (which statuses resume skips, which delta a chain reports, which order a batch is
saved in) is easy to break silently. This script copies the checkout (tracked and
untracked, not ignored files) into a temporary folder, and for each plant in ``PLANTS``
replaces one snippet of one file, runs the tests that should notice (``pytest -x``, in
the copy, with the copy first on the path), restores the file and prints one row:
``caught`` (a test failed), ``survived`` (all passed: a missing test) or ``error`` (the
snippet is no longer in the file, or pytest itself failed). Exit code 1 unless every
plant is caught. Not part of CI: it runs for many minutes.

    python scripts/mutation_check.py                 # every plant, after a baseline run
    python scripts/mutation_check.py --list          # names, areas and files only
    python scripts/mutation_check.py --only resume-failed-is-finished soteria-counts-dead
    python scripts/mutation_check.py --jobs 2 --skip-baseline
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 900  # one plant's test run


@dataclass(frozen=True)
class Plant:
    """One bug: in ``path``, the single occurrence of ``old`` becomes ``new``; ``tests`` are
    the pytest arguments (files or node ids) that must then fail."""

    name: str
    area: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


PLANTS = [
    # --- defenses ---
    Plant("prune-zeroes-the-threshold", "defenses", "gradinv_exp/defenses/compression.py",
          "torch.where(g.abs() < _threshold(", "torch.where(g.abs() <= _threshold(",
          ("tests/defenses/test_compression.py", "tests/defenses/test_properties.py")),
    Plant("quantize-2^bits-steps", "defenses", "gradinv_exp/defenses/compression.py",
          "steps = 2**cfg.bits - 1", "steps = 2**cfg.bits",
          ("tests/defenses/test_compression.py", "tests/defenses/test_properties.py")),
    Plant("soteria-counts-dead-features", "defenses", "gradinv_exp/defenses/soteria.py",
          "candidates = torch.nonzero(represented).flatten()",
          "candidates = torch.arange(len(scores))", ("tests/defenses/test_soteria.py",)),
    Plant("chain-runs-steps-in-reverse", "defenses", "gradinv_exp/defenses/chain.py",
          "for step in cfg.steps:", "for step in reversed(cfg.steps):",
          ("tests/defenses/test_chain.py",)),
    Plant("cost-counts-unchanged-entries", "defenses", "gradinv_exp/defenses/registry.py",
          '"defense_changed": float((s != g)', '"defense_changed": float((s == g)',
          ("tests/defenses/test_registry.py",)),
    Plant("sign-mutates-its-input", "defenses", "gradinv_exp/defenses/compression.py",
          "return [torch.sign(g) * g.abs().mean() for g in grads]",
          "return [g.abs().mean() * g.sign_() for g in grads]",
          ("tests/defenses/test_properties.py::test_every_registered_defense_keeps_the_contract",)),
    # --- privacy ---
    Plant("dp-chain-reports-largest-delta", "privacy", "gradinv_exp/defenses/privacy.py",
          "delta = min(c.delta for c in steps)", "delta = max(c.delta for c in steps)",
          ("tests/defenses/test_privacy.py",)),
    Plant("dp-chain-reports-last-accountant", "privacy", "gradinv_exp/defenses/privacy.py",
          "delta, steps[0].accountant)", "delta, steps[-1].accountant)",
          ("tests/defenses/test_privacy.py",)),
    Plant("dp-chain-composes-first-release-only", "privacy", "gradinv_exp/defenses/privacy.py",
          "eps, used = epsilon([c.noise_multiplier for c in steps],",
          "eps, used = epsilon([steps[0].noise_multiplier],", ("tests/defenses/test_privacy.py",)),
    Plant("dp-noise-not-averaged", "privacy", "gradinv_exp/defenses/privacy.py",
          "(g + std * torch.randn(g.shape, generator=generator, dtype=g.dtype)"
          ".to(g.device)) / count",
          "g / count + std * torch.randn(g.shape, generator=generator, dtype=g.dtype)"
          ".to(g.device)",
          ("tests/defenses/test_privacy.py",)),
    Plant("clip-ignores-the-examples", "privacy", "gradinv_exp/defenses/privacy.py",
          "examples = per_example_gradients(client)", "examples = [g[None] for g in grads]",
          ("tests/defenses/test_privacy.py",)),
    # --- metrics ---
    Plant("psnr-uncapped", "metrics", "gradinv_exp/analysis/metrics.py",
          "return np.minimum(np.array(values), PSNR_CAP_DB)", "return np.array(values)",
          ("tests/analysis/test_metrics.py",)),
    Plant("ssim-data-range-2", "metrics", "gradinv_exp/analysis/metrics.py",
          "structural_similarity(a, b, data_range=1.0",
          "structural_similarity(a, b, data_range=2.0",
          ("tests/analysis/test_metrics.py",)),
    Plant("evaluate-skips-matching", "metrics", "gradinv_exp/analysis/metrics.py",
          "order = torch.as_tensor(match(truth, recon), device=recon.device)",
          "order = torch.arange(len(recon), device=recon.device)",
          ("tests/analysis/test_metrics.py",)),
    Plant("metrics-score-unclamped", "metrics", "gradinv_exp/analysis/metrics.py",
          "return images.detach().clamp(0, 1).permute(0, 2, 3, 1)",
          "return images.detach().permute(0, 2, 3, 1)",
          ("tests/analysis/test_metrics.py::test_every_metric_scores_the_image_that_is_saved",)),
    Plant("trial-std-with-ddof-1", "metrics", "gradinv_exp/analysis/uncertainty.py",
          'f"{name}_std": float(values.std())', 'f"{name}_std": float(values.std(ddof=1))',
          ("tests/analysis/test_uncertainty.py", "tests/analysis/test_metrics.py")),
    # --- labels ---
    Plant("idlg-labels-optimised", "labels", "gradinv_exp/attacks/labels.py",
          'LabelMode("idlg", optimised=False', 'LabelMode("idlg", optimised=True',
          ("tests/attacks/test_engine.py", "tests/attacks/test_labels.py")),
    Plant("labels-from-the-first-linear", "labels", "gradinv_exp/attacks/labels.py",
          "return ids.index(id(linears[-1]))", "return ids.index(id(linears[0]))",
          ("tests/attacks/test_labels.py",)),
    # --- resume ---
    Plant("resume-failed-is-finished", "resume", "gradinv_exp/base/status.py",
          "(Status.OK, Status.DIVERGED)", "(Status.OK, Status.DIVERGED, Status.FAILED)",
          ("tests/runs/test_resume.py",)),
    Plant("resume-interrupted-is-finished", "resume", "gradinv_exp/base/status.py",
          "(Status.OK, Status.DIVERGED)", "(Status.OK, Status.DIVERGED, Status.INTERRUPTED)",
          ("tests/runs/test_resume.py",)),
    Plant("resume-single-run-unchecked", "resume", "gradinv_exp/runs/preflight.py",
          "resume.check_folder(folder, plain)", "pass",
          ("tests/runs/test_resume.py",)),
    Plant("resume-custom-subdir-unchecked", "resume", "gradinv_exp/runs/preflight.py",
          "return sweep_dir / str(cfg.hydra.sweep.subdir)", "return sweep_dir / str(num)",
          ("tests/runs/test_resume.py",)),
    # --- summary ---
    Plant("curves-at-row-numbers", "summary", "gradinv_exp/analysis/figures.py",
          'group["strength"], group[metric], marker="o",',
          'np.arange(len(group)), group[metric], marker="o",',
          ("tests/analysis/test_figures.py",)),
    Plant("summary-failures-skip-missing", "summary", "gradinv_exp/analysis/summary.py",
          "ended = (Status.FAILED, Status.INTERRUPTED, Status.MISSING)",
          "ended = (Status.FAILED, Status.INTERRUPTED)",
          ("tests/analysis/test_summary.py",)),
    Plant("summary-missing-job-is-ok", "summary", "gradinv_exp/analysis/summary.py",
          '"status": Status.MISSING,', '"status": Status.OK,', ("tests/analysis/test_summary.py",)),
    Plant("summary-strength-from-ratio", "summary", "gradinv_exp/analysis/summary.py",
          'cfg.get(f"defense.{key}") if key', 'cfg.get("defense.ratio") if key',
          ("tests/analysis/test_summary.py",)),
    # --- utility ---
    Plant("fedavg-keeps-last-client", "utility", "gradinv_exp/utility.py",
          "p.add_(step * torch.stack(each).mean(0))", "p.add_(step * each[-1])",
          ("tests/test_utility.py",)),
    Plant("fedavg-sums-updates", "utility", "gradinv_exp/utility.py",
          "p.add_(step * torch.stack(each).mean(0))", "p.add_(step * torch.stack(each).sum(0))",
          ("tests/test_utility.py",)),
    Plant("server-steps-after-each-client", "utility", "gradinv_exp/utility.py",
          "        with torch.no_grad():\n"
          "            for p, *each in zip(model.parameters(), *shares):\n"
          "                p.add_(step * torch.stack(each).mean(0))\n",
          "            with torch.no_grad():\n"
          "                for p, *each in zip(model.parameters(), *shares):\n"
          "                    p.add_(step * torch.stack(each).mean(0))\n",
          ("tests/test_utility.py",)),
    Plant("server-applies-true-shares", "utility", "gradinv_exp/utility.py",
          "shares.append(defenses.apply(true, defense, generator=noise, client=who))\n"
          "            costs.append(defenses.cost(true, shares[-1]))",
          "shares.append(true)\n"
          "            costs.append(defenses.cost(true, defenses.apply(true, defense, "
          "generator=noise, client=who)))", ("tests/test_utility.py",)),
    Plant("fedsgd-server-ascends", "utility", "gradinv_exp/utility.py",
          "else -cfg.lr  # an update already holds its step",
          "else cfg.lr  # an update already holds its step",
          ("tests/test_utility.py",)),
    Plant("fedavg-shares-new-weights", "utility", "gradinv_exp/client.py",
          "return {k: current[k] - params[k] for k in params}", "return current",
          ("tests/test_utility.py",)),
    Plant("utility-accuracy-on-train", "utility", "gradinv_exp/utility.py",
          "accuracy(model, images[test], labels[test])",
          "accuracy(model, images[shards[0]], labels[shards[0]])", ("tests/test_utility.py",)),
    # --- experiment ---
    Plant("history-unmatched", "experiment", "gradinv_exp/experiment.py",
          "pairs = [(images[t], metrics.matched(images[t], recon[t]))",
          "pairs = [(images[t], recon[t])", ("tests/test_cli.py",)),
    Plant("images-saved-in-attack-order", "experiment", "gradinv_exp/experiment.py",
          'ordered = torch.stack([result.images[t].cpu()[scores["order"][t]] for t in',
          "ordered = torch.stack([result.images[t].cpu() for t in", ("tests/test_cli.py",)),
    Plant("normalisation-never-applied", "experiment", "gradinv_exp/experiment.py",
          "if ds.mean is not None and ds.std is not None:",
          "if ds.mean is not None and ds.std is None:", ("tests/test_models.py",)),
    Plant("attack-sees-true-gradient", "experiment", "gradinv_exp/experiment.py",
          "shared.append(defenses.apply(g, cfg.defense, generator=noise, client=who))",
          "shared.append(g)", ("tests/test_cli.py",)),
    Plant("pretrain-logs-before-last-step", "experiment", "gradinv_exp/models.py",
          "        losses.append(float(soft_cross_entropy(net(x), onehot)))\n",
          "        losses.append(losses[-1])\n", ("tests/test_models.py",)),
    Plant("index-check-off-by-one", "experiment", "gradinv_exp/config.py",
          "if size is None or ds.index + count <= size:",
          "if size is None or ds.index + count < size:", ("tests/test_config.py",)),
    # --- engine ---
    Plant("restarts-highest-loss-wins", "engine", "gradinv_exp/attacks/engine.py",
          "nan=math.inf).argmin(0)", "nan=math.inf).argmax(0)",
          ("tests/attacks/test_engine.py",)),
    Plant("diverged-keeps-nonfinite-images", "engine", "gradinv_exp/attacks/engine.py",
          "v.copy_(torch.where(diverged[:, None], good, v))", "pass",
          ("tests/attacks/test_engine.py",)),
    Plant("boxed-clamps-labels-too", "engine", "gradinv_exp/attacks/engine.py",
          "self.images().clamp_(0, 1)", "self.variables.clamp_(0, 1)",
          ("tests/attacks/test_engine.py",)),
    Plant("lr-decay-at-halves", "engine", "gradinv_exp/attacks/engine.py",
          "for f in (3 / 8, 5 / 8, 7 / 8)]", "for f in (1 / 2, 5 / 8, 7 / 8)]",
          ("tests/attacks/test_engine.py",)),
]  # fmt: skip


def copy_checkout(target: Path) -> None:
    """The checkout's tracked and untracked (not ignored) files into ``target``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def pytest(copy: Path, tests: tuple[str, ...]) -> subprocess.CompletedProcess:
    """``pytest -x`` on ``tests`` inside ``copy``, with the copy's package imported."""
    env = os.environ | {"PYTHONPATH": str(copy)}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    return subprocess.run(
        command, cwd=copy, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )


def first_failure(output: str) -> str:
    """The first ``FAILED``/``ERROR`` test id of pytest's short summary, or ''."""
    found = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    return found.group(1) if found else ""


def check(plant: Plant, copy: Path) -> tuple[str, float, str]:
    """Plant ``plant`` in ``copy``, run its tests, restore the file: (result, seconds, detail)."""
    path = copy / plant.path
    original = path.read_text()
    if original.count(plant.old) != 1:
        found = original.count(plant.old)
        return "error", 0.0, f"snippet found {found} times in {plant.path}"
    path.write_text(original.replace(plant.old, plant.new))
    start = time.perf_counter()
    try:
        proc = pytest(copy, plant.tests)
    except subprocess.TimeoutExpired:
        return "error", time.perf_counter() - start, f"timed out after {TIMEOUT_S} s"
    finally:
        path.write_text(original)
    seconds = time.perf_counter() - start
    if proc.returncode == 0:
        return "survived", seconds, ""
    if proc.returncode == 1:
        return "caught", seconds, first_failure(proc.stdout)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:]
    return "error", seconds, f"pytest exit {proc.returncode}: {' '.join(tail)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these plants")
    parser.add_argument("--list", action="store_true", help="list the plants and exit")
    parser.add_argument("--jobs", type=int, default=1, help="plants checked at once (copies)")
    parser.add_argument(
        "--skip-baseline", action="store_true", help="do not first run the tests unplanted"
    )
    args = parser.parse_args()
    names = [p.name for p in PLANTS]
    if len(set(names)) != len(names):
        raise SystemExit("duplicate plant names")
    plants = [p for p in PLANTS if not args.only or p.name in args.only]
    unknown = sorted(set(args.only or ()) - set(names))
    if unknown:
        parser.error(f"unknown plant(s): {', '.join(unknown)}; see --list")
    if args.list:
        for p in plants:
            print(f"{p.name:38} {p.area:11} {p.path}")
        return 0
    jobs = max(1, min(args.jobs, len(plants)))
    with tempfile.TemporaryDirectory(prefix="mutation-") as scratch:
        copies = [Path(scratch) / f"copy{i}" for i in range(jobs)]
        for copy in copies:
            copy_checkout(copy)
        if not args.skip_baseline:
            every = tuple(dict.fromkeys(t for p in plants for t in p.tests))
            baseline = pytest(copies[0], every)
            if baseline.returncode != 0:
                print(baseline.stdout[-3000:], baseline.stderr[-2000:], sep="\n")
                print("baseline: the tests fail without any plant; fix that first")
                return 1
            print(f"baseline: {len(every)} test files pass without any plant")
        free = list(copies)

        def run(plant: Plant) -> tuple[Plant, tuple[str, float, str]]:
            copy = free.pop()  # one copy per worker thread; list.pop is atomic
            try:
                return plant, check(plant, copy)
            finally:
                free.append(copy)

        print(f"{'plant':38} {'area':11} {'result':9} {'time':>6}  first failing test")
        results = []
        with ThreadPoolExecutor(jobs) as pool:
            for plant, (result, seconds, detail) in pool.map(run, plants):
                results.append(result)
                line = f"{plant.name:38} {plant.area:11} {result:9} {seconds:5.0f}s  {detail}"
                print(line, flush=True)
    caught = results.count("caught")
    print(f"{caught} of {len(results)} plants caught", end="")
    print("" if caught == len(results) else f"; {len(results) - caught} not: add tests")
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
