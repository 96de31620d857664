"""Hydra accepts launcher and sweeper plugins only from classes defined under the
``hydra_plugins`` namespace package: ``hydra/launcher=batched``
(conf/hydra/launcher/batched.yaml) and ``hydra/sweeper=composed``
(conf/hydra/sweeper/composed.yaml, the default) name these; their code is
``gradinv_exp/runs/batched.py`` and ``gradinv_exp/runs/sweeper.py``."""

from gradinv_exp.runs import batched, sweeper


class BatchedLauncher(batched.BatchedLauncher):
    """``gradinv_exp.runs.batched.BatchedLauncher`` under the name Hydra accepts."""


class ComposedSweeper(sweeper.ComposedSweeper):
    """``gradinv_exp.runs.sweeper.ComposedSweeper`` under the name Hydra accepts."""
