#!/usr/bin/env bash
# Build the wheel, install it into a fresh virtual environment and run it from a temporary
# folder outside the repo: a 3-step experiment with the console script, a preset (on the
# batched launcher, a Hydra plugin of the wheel), --help, the Python API, and the plugin
# example (its code and presets outside the package) at a tiny size.
#
# torch and torchvision (and what they depend on, ~6 GB) are reused from PYTHON's
# environment as hard links of their installed files, as the issue allows; pip installs
# the wheel and every other dependency into the new environment. `make check-wheel` runs
# this; .ci/run runs that.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
python="${PYTHON:-.venv/bin/python}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

start=$SECONDS
"$python" -m pip wheel . --no-deps --no-build-isolation --quiet -w "$tmp/dist"
rm -rf build gradinv_exp.egg-info  # the in-tree build's leftovers
python3 -m venv "$tmp/venv"
site="$("$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
"$python" - "$site" <<'PY'
"""Hard-link the files that torch, torchvision and their dependencies installed here into
the site-packages folder argv[1]: pip then finds them installed (same dist-info)."""
import importlib.metadata as md
import os
import sys
import sysconfig
from pathlib import Path

from packaging.requirements import Requirement

here, target = Path(sysconfig.get_path("purelib")).resolve(), Path(sys.argv[1])
fresh = {d.metadata["Name"].lower() for d in md.distributions(path=[str(target)])}  # pip ...
todo, seen = [Requirement("torch"), Requirement("torchvision")], set()
while todo:
    wanted = todo.pop()
    dist = md.distribution(wanted.name)
    if dist.metadata["Name"].lower() in seen | fresh:
        continue
    seen.add(dist.metadata["Name"].lower())
    extras = {"", *wanted.extras}  # cuda-toolkit[cublas,...]: follow the extras asked for
    for need in map(Requirement, dist.requires or []):
        if need.marker is None or any(need.marker.evaluate({"extra": e}) for e in extras):
            todo.append(need)
    for file in dist.files or []:
        source = Path(str(dist.locate_file(file))).resolve()
        if source.is_relative_to(here) and source.is_file():  # not bin/ scripts
            link = target / source.relative_to(here)
            link.parent.mkdir(parents=True, exist_ok=True)
            os.link(source, link)
print(f"reused {len(seen)} installed distributions: {', '.join(sorted(seen))}")
PY
"$tmp/venv/bin/python" -m pip install --quiet "$tmp"/dist/gradinv_exp-*.whl
echo "check-wheel: built and installed in $((SECONDS - start)) s"

mkdir "$tmp/work"
cd "$tmp/work"
"$tmp/venv/bin/gradinv-exp" dataset=photos attack.iterations=3 attack.snapshot_every=1 \
    hydra.run.dir=run
test -s run/metrics.json
"$tmp/venv/bin/gradinv-exp" +experiment=seed_defenses dataset=photos attack.iterations=2 \
    attack.snapshot_every=1 dataset.image_size=16 hydra.sweep.dir=preset  # batched launcher
"$tmp/venv/bin/python" -c "import pandas as pd
status = pd.read_csv('preset/summary.csv')['status'].tolist()
assert status == ['ok'] * 4, status"
"$tmp/venv/bin/gradinv-exp" --help > help.txt
grep -q "== Config groups" help.txt
"$tmp/venv/bin/python" -c "import gradinv_exp
r = gradinv_exp.run('dataset=photos', 'attack.iterations=3', 'defense=noise', out='api')
assert r.metrics['status'] == 'ok', r.metrics"
PYTHON="$tmp/venv/bin/python" "$repo/scripts/plugin_example/run.sh" plugin dataset=photos \
    attack.iterations=2 attack.snapshot_every=1 +tags.level=0,6
test -s plugin/report/curves.png
echo "check-wheel: ok in $((SECONDS - start)) s (the wheel ran from $tmp/work)"
