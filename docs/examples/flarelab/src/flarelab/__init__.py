"""flarelab: a lab's stellar-flare detector, published as a learndock plug-in.

learndock discovers the components listed in ``__all__`` through the
``learndock.components`` entry point of this package.
"""

from flarelab.events import equivalent_durations, flare_events
from flarelab.flares import FlareDetector, FlareResult, detect_flares

__all__ = ["FlareDetector", "FlareResult", "detect_flares", "equivalent_durations", "flare_events"]
__version__ = "1.0.0"
