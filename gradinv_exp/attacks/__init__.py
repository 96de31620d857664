"""The ``attack`` and ``optimizer`` groups: the attacker contract and its families.

Every attack is an entry of ``ATTACKS`` (``contract.py``): ``reconstruct(targets,
context)``, one or more jobs' targets at once. The optimisation family is one engine
(``engine.py``), with ``conf/attack/<preset>.yaml`` (dlg, idlg, ig, gradinversion) as its
configurations; objectives and priors (``objectives.py``), label modes and recovery
(``labels.py``) and optimisers (``optimizers.py``, with the batched L-BFGS in
``lbfgs.py``) are small registries it draws from. The closed form (``analytic.py``) and
the learned inversion (``learned.py``) are families of their own.
"""

from gradinv_exp.attacks import analytic, imprint, learned  # noqa: F401  (register their families)
from gradinv_exp.attacks.backend import Backend
from gradinv_exp.attacks.backend import choose as choose_backend
from gradinv_exp.attacks.checkpoint import Checkpoints
from gradinv_exp.attacks.contract import (
    ATTACKS,
    AttackResult,
    BaseAttackConfig,
    Context,
    Observed,
    Target,
)
from gradinv_exp.attacks.engine import AttackConfig, Job, attack, check_optimizer
from gradinv_exp.attacks.labels import LABELS
from gradinv_exp.attacks.objectives import OBJECTIVES, PRIORS
from gradinv_exp.attacks.optimizers import OPTIMIZERS, OptimizerConfig

__all__ = [
    "ATTACKS",
    "LABELS",
    "OBJECTIVES",
    "OPTIMIZERS",
    "PRIORS",
    "AttackConfig",
    "AttackResult",
    "Backend",
    "BaseAttackConfig",
    "Checkpoints",
    "Context",
    "Job",
    "Observed",
    "OptimizerConfig",
    "Target",
    "attack",
    "check_optimizer",
    "choose_backend",
]
