"""Autoencoder residuals: a learned detector for anomalies with no physical template.

A small convolutional autoencoder (1-D for light curves and trajectories, 2-D for images,
3-D for volumes) is trained on the user's *normal* data; an input it cannot reconstruct
is anomalous.  The per-sample score is the mean squared residual in units of the
training noise, the threshold is calibrated as a quantile of held-out normal scores, and
the weights are saved as safetensors so a trained instance can be published as a
learnware.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components._validation import as_float_tensor, check_nonempty, check_range
from components.base import Component, Declaration, single_intra_op_thread
from specs.semantic import SemanticSpec, TensorSchema

__all__ = ["AutoencoderOutput", "ResidualAutoencoder"]


def _chans_total(module: nn.Module) -> int:
    """Total feature channels of a module's convolutions (a cost proxy)."""
    return sum(
        m.out_channels
        for m in module.modules()
        if isinstance(
            m,
            nn.Conv1d
            | nn.Conv2d
            | nn.Conv3d
            | nn.ConvTranspose1d
            | nn.ConvTranspose2d
            | nn.ConvTranspose3d,
        )
    )


_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_TCONV = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


@dataclasses.dataclass
class AutoencoderOutput:
    """Reconstruction and anomaly scores of a batch.

    Attributes
    ----------
    reconstruction, residual : Tensor
        Shape of the input, in input units.
    element_score : Tensor
        Squared normalised residual per element (about chi-square(1) for normal data).
    score : Tensor, shape (batch,)
        Mean of ``element_score`` per sample.
    probability : Tensor, shape (batch,)
        ``sigmoid((score - threshold) / temperature)``.
    """

    reconstruction: Tensor
    residual: Tensor
    element_score: Tensor
    score: Tensor
    probability: Tensor


class ResidualAutoencoder(Component):
    """Convolutional autoencoder with a calibrated residual anomaly score.

    Parameters
    ----------
    ndim : {1, 2, 3}
        Spatial dimensionality: 1 for (batch, channel, t) light curves / trajectories, 2 for
        (batch, channel, y, x) images, 3 for volumes.
    in_channels : int
        Input channels (1 for a light curve, 3 x markers for trajectories).
    channels : list of int
        Feature channels per down-sampling level (each level halves every axis).
    seed : int
        Seed of the deterministic weight initialisation.
    threshold, temperature : float
        Initial score threshold and sigmoid width (learnable); :meth:`fit` calibrates
        both from held-out normal data.
    quantile : float
        Calibration quantile of the held-out normal scores for the threshold.

    Notes
    -----
    Inputs are standardised per channel with the training mean and standard deviation
    (buffers), encoded by stride-2 3-tap convolutions with SiLU activations, decoded by
    stride-2 transposed convolutions, and compared with the input:
    :math:`e = ((x-\\hat x)/s)^2/\\hat\\sigma^2`, :math:`\\hat\\sigma^2` the median training
    residual power divided by 0.455 (the chi-square(1) median).  Axes are padded
    (replicate) to a multiple of :math:`2^{levels}` and cropped back.  SiLU (not ReLU) keeps
    the module smooth, so gradients agree with finite differences.

    Raises
    ------
    ValueError
        If the input is empty, has the wrong number of axes for ``ndim``, or holds
        NaN/inf.

    Examples
    --------
    >>> import torch
    >>> ae = ResidualAutoencoder(ndim=1, in_channels=1, channels=[4, 8])
    >>> out = ae(torch.zeros(2, 1, 30))
    >>> out.reconstruction.shape, out.score.shape
    (torch.Size([2, 1, 30]), torch.Size([2]))
    """

    mean: Tensor
    std: Tensor
    noise_var: Tensor
    encoder: nn.Sequential
    decoder: nn.Sequential

    name = "detection.autoencoder"
    function = None
    differentiable = True
    footprint = 0

    def __init__(
        self,
        *,
        ndim: int = 1,
        in_channels: int = 1,
        channels: list[int] | None = None,
        seed: int = 0,
        threshold: float = 3.0,
        temperature: float = 0.3,
        quantile: float = 0.99,
    ) -> None:
        if ndim not in (1, 2, 3):
            raise ValueError(f"ndim: expected 1, 2 or 3, got {ndim!r}")
        if int(in_channels) < 1:
            raise ValueError(f"in_channels: expected a positive integer, got {in_channels!r}")
        chans = [16, 32] if channels is None else [int(c) for c in channels]
        if not chans or any(c < 1 for c in chans):
            raise ValueError(
                f"channels: expected a non-empty list of positive integers, got {channels!r}"
            )
        check_range(quantile, "quantile", 0.5, 1.0)
        super().__init__(
            ndim=int(ndim),
            in_channels=int(in_channels),
            channels=channels,
            seed=int(seed),
            threshold=float(threshold),
            temperature=float(temperature),
            quantile=float(quantile),
        )
        conv, tconv = _CONV[ndim], _TCONV[ndim]
        enc: list[nn.Module] = []
        c_prev = int(in_channels)
        for c in chans:
            enc += [conv(c_prev, c, 3, stride=2, padding=1), nn.SiLU()]
            c_prev = c
        dec: list[nn.Module] = []
        for c in [*reversed(chans[:-1]), chans[0]]:
            dec += [tconv(c_prev, c, 4, stride=2, padding=1), nn.SiLU()]
            c_prev = c
        dec.append(conv(c_prev, int(in_channels), 1))
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)
        self.levels = len(chans)
        self.register_buffer("mean", torch.zeros(int(in_channels)))
        self.register_buffer("std", torch.ones(int(in_channels)))
        self.register_buffer("noise_var", torch.ones(()))
        self.threshold = nn.Parameter(torch.tensor(float(threshold)))
        self.temperature = nn.Parameter(torch.tensor(float(temperature)))
        self._init_weights(int(seed))

    def _init_weights(self, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(
                    m,
                    nn.Conv1d
                    | nn.Conv2d
                    | nn.Conv3d
                    | nn.ConvTranspose1d
                    | nn.ConvTranspose2d
                    | nn.ConvTranspose3d,
                ):
                    fan_in = (
                        m.weight[0].numel()
                        if not isinstance(
                            m, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d
                        )
                        else m.weight.shape[0] * m.weight[0, 0].numel()
                    )
                    bound = 1.0 / math.sqrt(max(1, fan_in))
                    m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 2 * bound - bound)
                    if m.bias is not None:
                        m.bias.zero_()

    # -- core ----------------------------------------------------------------------------
    def _check(self, x: Any) -> Tensor:
        t = as_float_tensor(x, "x")
        check_nonempty(t, "x")
        if not bool(torch.isfinite(t.detach()).all()):
            raise ValueError(
                "x: expected finite values, got NaN/inf (fill or mask them before scoring)"
            )
        nd = self._config["ndim"]
        if t.ndim != nd + 2 or t.shape[1] != self._config["in_channels"]:
            raise ValueError(
                f"x: expected shape (batch, {self._config['in_channels']}, "
                + ", ".join("n" * nd)
                + f") for ndim={nd}, got {tuple(t.shape)}"
            )
        return t.to(self.mean.dtype) if t.dtype != self.mean.dtype else t

    def _reconstruct(self, x: Tensor) -> Tensor:
        nd = self._config["ndim"]
        view = (1, -1) + (1,) * nd
        z = (x - self.mean.reshape(view)) / self.std.reshape(view)
        mult = 2**self.levels
        spatial = z.shape[2:]
        pad = []
        for n in reversed(spatial):
            pad += [0, (-n) % mult]
        zp = F.pad(z, pad, mode="replicate") if any(pad) else z
        rec = self.decoder(self.encoder(zp))
        rec = rec[(slice(None), slice(None), *(slice(0, n) for n in spatial))]
        return rec * self.std.reshape(view) + self.mean.reshape(view)

    def forward(self, x: Tensor) -> AutoencoderOutput:
        t = self._check(x)
        rec = self._reconstruct(t)
        res = t - rec
        nd = self._config["ndim"]
        view = (1, -1) + (1,) * nd
        e = (res / self.std.reshape(view)) ** 2 / self.noise_var
        score = e.reshape(e.shape[0], -1).mean(1)
        prob = torch.sigmoid((score - self.threshold) / self.temperature)
        return AutoencoderOutput(
            reconstruction=rec, residual=res, element_score=e, score=score, probability=prob
        )

    def self_supervised_loss(self, inputs: Any, output: Any) -> Tensor | None:
        """Mean squared normalised residual (the training criterion)."""
        return output.element_score.mean()

    # -- training and persistence --------------------------------------------------------
    def fit(
        self,
        data: Any,
        *,
        epochs: int = 200,
        lr: float = 3e-3,
        batch_size: int = 32,
        val_fraction: float = 0.2,
        seed: int = 0,
    ) -> dict[str, float]:
        """Train on normal data, then calibrate the noise level and threshold.

        Parameters
        ----------
        data : array_like, shape (n, in_channels, *spatial)
            Normal (anomaly-free) samples.
        epochs, lr, batch_size : training schedule (Adam, MSE on standardised data).
        val_fraction : float
            Held-out fraction used for the calibration.
        seed : int
            Seed of the split and the batch order.

        Returns
        -------
        dict
            ``train_loss``, ``noise_var``, ``threshold`` and ``temperature``.
        """
        X = self._check(data).detach()
        n = X.shape[0]
        if n < 4:
            raise ValueError(
                f"data: expected at least 4 normal samples to train and calibrate, got {n}"
            )
        gen = torch.Generator().manual_seed(seed)
        perm = torch.randperm(n, generator=gen)
        n_val = max(2, round(val_fraction * n))
        val, tr = X[perm[:n_val]], X[perm[n_val:]]
        dims = [0, *range(2, X.ndim)]
        with torch.no_grad():
            self.mean.copy_(tr.mean(dim=dims))
            self.std.copy_(tr.std(dim=dims).clamp_min(1e-12))
        params = [p for nm, p in self.named_parameters() if nm not in ("threshold", "temperature")]
        opt = torch.optim.Adam(params, lr=lr)
        nd = self._config["ndim"]
        view = (1, -1) + (1,) * nd
        loss_v = float("nan")
        self.train()
        # small batches of small convolutions gain nothing from intra-op threads and lose
        # a lot to oversubscription: train single-threaded below ~1M elements per batch
        small = tr[: int(batch_size)].numel() * max(_chans_total(self), 1) < (1 << 20)
        with single_intra_op_thread(small):
            self._train_loop(tr, opt, int(epochs), int(batch_size), gen, view)
        loss_v = self._last_loss
        self.eval()
        with torch.no_grad():
            e = ((val - self._reconstruct(val)) / self.std.reshape(view)) ** 2
            self.noise_var.copy_((e.median() / 0.455).clamp_min(1e-12))
            scores = (e / self.noise_var).reshape(e.shape[0], -1).mean(1)
            q = float(self._config["quantile"])
            thr = float(torch.quantile(scores, q)) * 1.5
            spread = float(scores.std()) if scores.numel() > 1 else 0.1 * thr
            self.threshold.copy_(torch.tensor(thr))
            self.temperature.copy_(torch.tensor(max(spread, 1e-3 * max(thr, 1.0))))
        return {
            "train_loss": loss_v,
            "noise_var": float(self.noise_var),
            "threshold": float(self.threshold.detach()),
            "temperature": float(self.temperature.detach()),
        }

    def _train_loop(
        self,
        tr: Tensor,
        opt: torch.optim.Optimizer,
        epochs: int,
        batch_size: int,
        gen: torch.Generator,
        view: tuple[int, ...],
    ) -> None:
        self._last_loss = float("nan")
        for _ in range(epochs):
            order = torch.randperm(tr.shape[0], generator=gen)
            for s in range(0, tr.shape[0], batch_size):
                xb = tr[order[s : s + batch_size]]
                rec = self._reconstruct(xb)
                loss = (((xb - rec) / self.std.reshape(view)) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                self._last_loss = float(loss.detach())

    def save_weights(self, path: str | Path) -> None:
        """Write the state (weights, normalisation, calibration) as safetensors."""
        from safetensors.torch import save_file

        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(path)
        )

    def load_weights(self, path: str | Path) -> ResidualAutoencoder:
        """Load a state written by :meth:`save_weights` (strict: same architecture)."""
        from safetensors.torch import load_file

        self.load_state_dict(load_file(str(path)))
        return self

    @classmethod
    def bad_examples(cls) -> list[tuple[dict[str, np.ndarray], type[Exception], str]]:
        bad = np.zeros((2, 1, 16), dtype=np.float32)
        bad[0, 0, 3] = np.nan
        return [
            ({"x": np.zeros((2, 3, 16), dtype=np.float32)}, ValueError, "x: expected shape"),
            ({"x": bad}, ValueError, "finite"),
        ]

    @classmethod
    def learnwares(cls) -> list[Declaration]:
        from components.detection import _reference as ref

        def lc_segments(seed: int, n: int = 8, length: int = 64) -> np.ndarray:
            f = ref.light_curves(seed, n_stars=n, baseline=length / 48.0 * 2)[:, :length]
            return ((f - 1.0) * 1e3)[:, None, :].astype(np.float32)

        def gait_windows(seed: int, n: int = 4, length: int = 32) -> np.ndarray:
            g = ref.gait(seed, n_frames=n * length, n_markers=6)
            w = g.reshape(n, length, 18).transpose(0, 2, 1)
            return (w - w.mean(axis=2, keepdims=True)).astype(np.float32)

        def trained(params: dict[str, Any], data: np.ndarray) -> dict[str, Tensor]:
            m = cls(**params)
            m.fit(data, epochs=30, batch_size=16)
            return {k: v.detach().clone() for k, v in m.state_dict().items()}

        lc_params = {"ndim": 1, "in_channels": 1, "channels": [8, 16]}
        gait_params = {"ndim": 1, "in_channels": 18, "channels": [16, 16]}
        common: dict[str, Any] = dict(
            family="detection",
            task="anomaly-detection",
            differentiable=True,
            authors=("learndock developers",),
        )
        return [
            Declaration(
                spec=SemanticSpec(
                    name="detection.autoencoder.lightcurve",
                    modality="light-curve",
                    scale="cosmic",
                    inputs={
                        "x": TensorSchema(axes="nct", description="light-curve segments (ppt)")
                    },
                    outputs={
                        "score": TensorSchema(axes="n"),
                        "probability": TensorSchema(axes="n"),
                    },
                    description="1-D convolutional autoencoder on light-curve segments; residual score flags flares, dips and instrumental glitches absent from normal training data",
                    tags=("autoencoder", "light-curves", "flares", "neural"),
                    **common,
                ),
                params=lc_params,
                reference_data=lambda seed: ref.light_curves(seed),
                example=lambda: {"x": lc_segments(0, n=3, length=32)},
                weights=lambda: trained(lc_params, lc_segments(1, n=64)),
            ),
            Declaration(
                spec=SemanticSpec(
                    name="detection.autoencoder.gait",
                    modality="biomechanics",
                    scale="macro",
                    inputs={
                        "x": TensorSchema(
                            axes="nct",
                            units="m",
                            description="windows of marker coordinates (marker x xyz channels)",
                        )
                    },
                    outputs={
                        "score": TensorSchema(axes="n"),
                        "probability": TensorSchema(axes="n"),
                    },
                    description="1-D convolutional autoencoder on motion-capture windows (6 markers x xyz); residual score flags abnormal strides or marker artefacts",
                    tags=("autoencoder", "gait", "motion-capture", "neural"),
                    **common,
                ),
                params=gait_params,
                reference_data=lambda seed: ref.gait(seed, n_markers=6),
                example=lambda: {"x": gait_windows(0, n=2, length=16)},
                weights=lambda: trained(gait_params, gait_windows(1, n=32)),
            ),
        ]
