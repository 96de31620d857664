"""The ``attack`` and ``optimizer`` groups: one optimisation engine and its parts.

``conf/attack/<preset>.yaml`` (dlg, idlg, ig, gradinversion) are configurations of
``engine.attack``; objectives and priors (``objectives.py``), label modes and recovery
(``labels.py``) and optimisers (``optimizers.py``, with the batched L-BFGS in
``lbfgs.py``) are small registries it draws from.
"""

from gradinv_exp.attacks.backend import Backend
from gradinv_exp.attacks.backend import choose as choose_backend
from gradinv_exp.attacks.checkpoint import Checkpoints
from gradinv_exp.attacks.engine import AttackConfig, AttackResult, attack, check_optimizer
from gradinv_exp.attacks.labels import LABELS
from gradinv_exp.attacks.objectives import OBJECTIVES, PRIORS
from gradinv_exp.attacks.optimizers import OPTIMIZERS, OptimizerConfig

__all__ = [
    "LABELS",
    "OBJECTIVES",
    "OPTIMIZERS",
    "PRIORS",
    "AttackConfig",
    "AttackResult",
    "Backend",
    "Checkpoints",
    "OptimizerConfig",
    "attack",
    "check_optimizer",
    "choose_backend",
]
