"""The detection family of components (see docs/components/detection.md).

Physics-based matched filters (spots, box-least-squares transits with robust
detrending), low-rank models (robust PCA, CP/Tucker tensor residuals) and neural
residual detectors (autoencoders).
"""

from components.detection.autoencoder import ResidualAutoencoder
from components.detection.rpca import RobustPCA
from components.detection.spots import SpotDetector
from components.detection.tensor import TensorResiduals
from components.detection.transits import Detrend, TransitSearch

__all__: list[str] = [
    "Detrend",
    "ResidualAutoencoder",
    "RobustPCA",
    "SpotDetector",
    "TensorResiduals",
    "TransitSearch",
]
