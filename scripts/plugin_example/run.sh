#!/usr/bin/env bash
# The plugin example, one command: soft pruning (my_defenses.py, a defense gradinv_exp does
# not have) on a small model of your own (my_models.py), swept next to the built-in prune
# and noise defenses, then one comparison of all runs. Nothing here is inside the package:
# the code is found through PYTHONPATH, the presets through hydra.searchpath.
#
#   scripts/plugin_example/run.sh [OUT [OVERRIDES...]]     (OUT defaults to plugin_example)
#   PYTHON=.venv/bin/python scripts/plugin_example/run.sh out dataset=photos +tags.level=0,6
#
# OUT/sweep: the sweep (summary.csv, comparison.png, curves.png: one panel per defense);
# OUT/report: `python -m gradinv_exp.compare` of it (compare.csv, summary.md, figures).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-plugin_example}"
shift || true
python="${PYTHON:-python3}"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
"$python" -m gradinv_exp "hydra.searchpath=[file://$here/conf]" +experiment=soft_prune_sweep \
    "hydra.sweep.dir=$out/sweep" "$@"
"$python" -m gradinv_exp.compare "$out/sweep" --out "$out/report"
