"""The ``defense`` group: one registry (``DEFENSES``), one module per kind of defense.

Importing this package registers every built-in defense. Each option's schema sits
beside its function; ``conf/defense/<name>.yaml`` selects the schema and names the code.
"""

from gradinv_exp.defenses import chain, compression, noise, privacy, soteria
from gradinv_exp.defenses.registry import (
    DEFENSES,
    Defense,
    DefenseConfig,
    apply,
    check_order,
    cost,
    defense,
    report,
    steps,
    strength,
)

__all__ = [
    "DEFENSES",
    "Defense",
    "DefenseConfig",
    "apply",
    "chain",
    "check_order",
    "compression",
    "cost",
    "defense",
    "noise",
    "privacy",
    "report",
    "soteria",
    "steps",
    "strength",
]
