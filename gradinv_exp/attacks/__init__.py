"""The ``attack`` and ``optimizer`` groups: the attacker contract and its families.

Every attack is an entry of ``ATTACKS`` (``contract.py``): ``reconstruct(targets,
context)``, one or more jobs' targets at once. The optimisation family is one engine
(``engine.py``), with ``conf/attack/<preset>.yaml`` (dlg, idlg, ig, gradinversion) as its
configurations; objectives and priors (``objectives.py``), label modes and recovery
(``labels.py``) and optimisers (``optimizers.py``, with the batched L-BFGS in
``lbfgs.py``) are small registries it draws from. The closed form (``analytic.py``) and
the learned inversion (``learned.py``) are families of their own. Importing this package
imports every module in it, and so registers every family (a new one is its module and
``conf/attack/<name>.yaml``).
"""

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
from gradinv_exp.base.options import import_all

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

# every module registers its families; lbfgs subclasses torch's Optimizer, so importing it
# loads torch: optimizers.py imports it when an L-BFGS attack runs
import_all(__name__, __path__, skip={"lbfgs"})
