"""learndock components: feedback observation adjustment, anomaly detection, symbolic rules.

Every public component is a pure tensor function plus a thin ``torch.nn.Module``;
see :mod:`components.base` for the contract and the allow-listed discovery.
"""

from components.base import (
    Component,
    ComponentNotFoundError,
    Declaration,
    discover_components,
    discover_learnwares,
    get_component,
    instantiate,
)

__all__ = [
    "Component",
    "ComponentNotFoundError",
    "Declaration",
    "discover_components",
    "discover_learnwares",
    "get_component",
    "instantiate",
]
