"""The feedback family: observation adjustment by closing the loop on the data.

Components (discovered through the ``learndock.components`` entry point ``feedback``):

* :class:`AdaptiveSampling` (``feedback.adaptive_sampling``): uncertainty-guided scanning.
* :class:`Deconvolution` (``feedback.deconvolution``): Richardson-Lucy with a learnable PSF.
* :class:`KalmanSmoother` (``feedback.kalman``): RTS smoothing and gap filling of markers.
* :class:`LightCurveScheduler` (``feedback.scheduling``): GP light curves and next times.

The loop protocol shared by every scale is in :mod:`components.feedback.loop`.
"""

from components.feedback.adaptive_sampling import AdaptiveSampling
from components.feedback.deconvolution import Deconvolution
from components.feedback.kalman import KalmanSmoother
from components.feedback.scheduling import LightCurveScheduler

__all__ = ["AdaptiveSampling", "Deconvolution", "KalmanSmoother", "LightCurveScheduler"]
