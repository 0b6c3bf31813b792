"""The rules family: discover physical laws from data and use them as pipeline stages.

* :mod:`components.rules.expression` -- one law IR (sympy <-> torch), ``ExpressionModule``
* :mod:`components.rules.sindy` -- SINDy in torch (libraries, weak form, STLSQ, bagging)
* :mod:`components.rules.symbolic` -- symbolic regression (operon, pysr) + post-processing
* :mod:`components.rules.units` -- units as a hard prior, Buckingham-pi reduction
* :mod:`components.rules.conservation` -- conserved quantities along trajectories
"""

from components.rules.conservation import ConservationLaw, find_conserved
from components.rules.expression import Expression, ExpressionModule
from components.rules.sindy import SINDy, fit_sindy
from components.rules.symbolic import SymbolicRegression, discover

__all__ = [
    "ConservationLaw",
    "Expression",
    "ExpressionModule",
    "SINDy",
    "SymbolicRegression",
    "discover",
    "find_conserved",
    "fit_sindy",
]
