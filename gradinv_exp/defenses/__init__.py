"""The ``defense`` group: one registry (``DEFENSES``), one module per kind of defense.

Importing this package imports every module in it, and so registers every built-in
defense (a new one is its module and ``conf/defense/<name>.yaml``). Each option's schema
sits beside its function; ``conf/defense/<name>.yaml`` selects the schema and names the
code.
"""

from gradinv_exp.base.options import import_all
from gradinv_exp.defenses.registry import (
    DEFENSES,
    Axis,
    Defense,
    DefenseConfig,
    apply,
    attacker_model,
    axis,
    check,
    check_order,
    cost,
    defense,
    has_checks,
    report,
    steps,
)

__all__ = [
    "DEFENSES",
    "Axis",
    "Defense",
    "DefenseConfig",
    "apply",
    "attacker_model",
    "axis",
    "check",
    "check_order",
    "cost",
    "defense",
    "has_checks",
    "report",
    "steps",
]

import_all(__name__, __path__)  # every module registers its defenses
