"""A lab's plug-in: stellar flares in TESS-like light curves.

The authoring guide's example plug-in, `docs/examples/flarelab`, adds a flare detector to
learndock: a 6-hour running median removes the star's rotation, the residual is measured
in robust sigma, and every sample gets a soft version of the Chang et al. (2015) score
(three consecutive points above 3 sigma). Here it runs on synthetic M-dwarf light curves
with Davenport et al. (2014) flares planted at known times; the table compares what it
found with the truth, and the figure shows one star with its flare score.
Scale: cosmic.
"""

import os
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

# The plug-in is normally `pip install`ed; the gallery reads it from the docs tree.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "flarelab" / "src"))
from flarelab import detect_flares, flare_events
from flarelab.synthetic import flare_light_curves

data = flare_light_curves(7, n_stars=6, n_samples=4096, n_flares=4, gap_fraction=0.05)
result = detect_flares(torch.as_tensor(data["flux"]), window=181, threshold=3.0, min_points=3)

print(f"{'star':>4} {'planted':>8} {'found':>6} {'false':>6}")
total = found_total = false_total = 0
for s in range(data["flux"].shape[0]):
    events = flare_events(result.score[s])
    peaks = [int(p) for p in data["peaks"][s] if not np.isnan(data["flux"][s, p])]
    found = sum(any(p - 3 <= e[1] < p + 60 for e in events) for p in peaks)
    false = sum(not any(p - 3 <= e[1] < p + 60 for p in peaks) for e in events)
    total, found_total, false_total = total + len(peaks), found_total + found, false_total + false
    print(f"{s:>4} {len(peaks):>8} {found:>6} {false:>6}")
print(f"recovered {found_total}/{total} planted flares, {false_total} false events")

t = data["time"]
fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
ax1.plot(t, data["flux"][0], lw=0.6, color="0.2")
for p in data["peaks"][0]:
    ax1.axvline(t[p], color="tab:red", lw=0.8, alpha=0.5)
ax1.set_ylabel("relative flux")
ax1.set_title("star 0: planted flares (red)")
ax2.plot(t, result.score[0].numpy(), color="tab:blue", lw=0.8)
ax2.set_ylabel("flare score")
ax2.set_xlabel("time [d]")
fig.tight_layout()
fig.savefig(Path(os.environ.get("LEARNDOCK_GALLERY_OUT", ".")) / "flare_score.png", dpi=110)
