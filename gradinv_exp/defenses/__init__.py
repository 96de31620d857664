"""The ``defense`` group: one registry (``DEFENSES``), one module per kind of defense.

Importing this package registers every built-in defense. Each option's schema sits
beside its function; ``conf/defense/<name>.yaml`` selects the schema and names the code.
"""

from gradinv_exp.defenses import chain, compression, custom, noise, privacy, soteria
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
    "chain",
    "check",
    "check_order",
    "compression",
    "cost",
    "custom",
    "defense",
    "has_checks",
    "noise",
    "privacy",
    "report",
    "soteria",
    "steps",
]
