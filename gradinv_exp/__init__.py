"""gradinv_exp: reproducible gradient-inversion experiments against gradient defenses.

From Python (a notebook): ``gradinv_exp.run(*overrides, out=...)`` runs one experiment as
the command line would and returns its ``Run`` (metrics, images, history);
``gradinv_exp.load_runs(paths)`` reads any run or sweep folders into compare's table.
See ``gradinv_exp.api``.
"""

from gradinv_exp.api import Run, load_runs, run

__all__ = ["Run", "load_runs", "run"]
