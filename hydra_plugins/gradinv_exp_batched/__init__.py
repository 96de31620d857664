"""Hydra accepts launcher plugins only from classes defined under the ``hydra_plugins``
namespace package: ``hydra/launcher=batched`` (conf/hydra/launcher/batched.yaml) names
this one; the batching launcher's code is ``gradinv_exp/runs/batched.py``."""

from gradinv_exp.runs import batched


class BatchedLauncher(batched.BatchedLauncher):
    """``gradinv_exp.runs.batched.BatchedLauncher`` under the name Hydra accepts."""
