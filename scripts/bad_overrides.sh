#!/usr/bin/env bash
# Every command line in scripts/bad_overrides.txt must exit 2 with one line on stderr and
# write nothing. Prints PASS/FAIL per line; exits 1 if any line failed.
# Usage: scripts/bad_overrides.sh [python]   (default: .venv/bin/python, else python3)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
export PYTHONPATH=$PWD HYDRA_FULL_ERROR=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -c "
import torch
from gradinv_exp import models
m = models.build('lenet', channels=1, num_classes=100, image_size=32, activation='sigmoid',
                 init_range=0.5, generator=torch.Generator().manual_seed(0))
torch.save(m.state_dict(), '$tmp/grey.pt')"
failures=0
while IFS= read -r line; do
  [[ -z "$line" || "$line" == \#* ]] && continue
  args=${line//\{tmp\}/$tmp}
  # shellcheck disable=SC2086  # word splitting of the overrides is intended
  "$PY" -m gradinv_exp $args "hydra.run.dir=$tmp/never" "hydra.sweep.dir=$tmp/never" \
    >/dev/null 2>"$tmp/err"
  rc=$?
  lines=$(wc -l <"$tmp/err")
  if [[ $rc -eq 2 && $lines -eq 1 && ! -e "$tmp/never" ]] && grep -q '^gradinv-exp: error: ' "$tmp/err"; then
    echo "PASS  $line  ->  $(cat "$tmp/err")"
  else
    echo "FAIL  $line  (exit $rc, $lines stderr lines): $(head -c 300 "$tmp/err")"
    failures=$((failures + 1))
  fi
done <scripts/bad_overrides.txt
echo "$failures failure(s)"
[[ $failures -eq 0 ]]
