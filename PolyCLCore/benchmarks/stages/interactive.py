"""Stage 'interactive': per-prompt latency of polycl.interact and the robot user's NoC90/NoC95.

Input: the 20-slice DICOM series (512 x 512, liver label resampled onto it in physical space).
Rows:

* ``encoder``: one slice embedding (LiteMedSAM encoder, the CPU engine ``auto`` picks);
* ``decoder (box)``: ``SliceSegmenter.predict(box=...)`` on an embedded slice (mask decoder only);
* ``include click`` / ``exclude click``: :meth:`InteractiveSession.add_point` on an embedded slice
  (on an empty slice: SAM answers 9 candidate boxes around the click in one decoder pass, then
  clean-up: what a user waits for after a click);
* ``slice change -> first answer``: an include click on a slice not embedded yet (embedding + answer);
* ``robot user``: :func:`polycl.interact.robot.run_robot` on the liver (NoC90, NoC95, seconds/click).

``extra.ratio_to_encoder`` compares each latency with the encoder time of the same run, which is
what to compare across machines (and on a loaded machine).
"""

import time

import numpy as np
from benchmark import Row
from scipy import ndimage

from polycl.interact import InteractiveSession
from polycl.interact.robot import centre, run_robot
from polycl.io import label_on_image_grid, read_label, read_volume, select_labels


def _best(fn, n=5):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), float(np.median(times))


def run(ctx):
    from polycl.sam import SliceSegmenter

    vol = read_volume(ctx.data / "totalsegmentator/example_ct_dicom")
    liver = select_labels(label_on_image_grid(read_label(ctx.data / "totalsegmentator/example_seg_dicom.nii.gz"),
                                              vol).array, 5)
    seg = SliceSegmenter(vol, device=ctx.device, cache_size=32)
    case = "example_ct_dicom liver"
    areas = liver.reshape(liver.shape[0], -1).sum(axis=1)
    z = int(np.argmax(areas))
    seg.set_slice((z + 3) % vol.shape[0])  # warm-up (engine build/check)
    enc, _ = _best(lambda: (seg.clear_cache(), seg.set_slice(z)), n=3)
    ys, xs = np.nonzero(liver[z])
    box = (xs.min() - 3, ys.min() - 3, xs.max() + 3, ys.max() + 3)
    seg.set_slice(z)
    dec, dec_med = _best(lambda: seg.predict(box=box))
    rows = [Row("interactive", f"{case}: encoder", ctx.device, enc, n_slices=1, unit="slice",
                extra={"engine": seg.loaded.encoder.name}),
            Row("interactive", f"{case}: decoder (box)", ctx.device, dec, n_slices=1, unit="prompt",
                extra={"median_s": round(dec_med, 4), "ratio_to_encoder": round(dec / enc, 3)})]
    y, x = centre(liver[z] > 0, (1.0, 1.0))

    def click():
        s = InteractiveSession(vol, engine="chain", segmenter=seg)
        return s, s.add_point((z, y, x))
    inc, inc_med = _best(lambda: click())
    s, a = click()
    wrong = ndimage.binary_dilation(a.mask2d > 0, iterations=15) & ~(a.mask2d > 0)
    leak_start = np.zeros(vol.shape, np.uint8)
    leak_start[z] = (a.mask2d > 0) | wrong
    ly, lx = centre(wrong, (1.0, 1.0))
    exc, exc_med = _best(lambda: InteractiveSession(vol, leak_start, engine="chain", segmenter=seg)
                         .add_point((z, ly, lx), include=False))
    rows += [Row("interactive", f"{case}: include click", ctx.device, inc, n_slices=1, unit="prompt",
                 extra={"median_s": round(inc_med, 4), "ratio_to_encoder": round(inc / enc, 3)}),
             Row("interactive", f"{case}: exclude click", ctx.device, exc, n_slices=1, unit="prompt",
                 extra={"median_s": round(exc_med, 4), "ratio_to_encoder": round(exc / enc, 3)})]
    k = int(np.flatnonzero(areas)[len(np.flatnonzero(areas)) // 3])
    seg.clear_cache()
    yk, xk = centre(liver[k] > 0, (1.0, 1.0))
    t0 = time.perf_counter()
    InteractiveSession(vol, engine="chain", segmenter=seg).add_point((k, yk, xk))
    first = time.perf_counter() - t0
    rows.append(Row("interactive", f"{case}: slice change -> first answer", ctx.device, first, n_slices=1,
                    unit="prompt", extra={"ratio_to_encoder": round(first / enc, 3)}))
    t0 = time.perf_counter()
    robot = run_robot(InteractiveSession(vol, engine="chain", segmenter=seg), liver)
    rows.append(Row("interactive", f"{case}: robot user", ctx.device, time.perf_counter() - t0,
                    n_slices=vol.shape[0], extra={"NoC90": robot.noc(0.90), "NoC95": robot.noc(0.95),
                                                  "dice@1": round(robot.dice_at(1), 4),
                                                  "dice@5": round(robot.dice_at(5), 4),
                                                  "seconds_per_click": round(robot.seconds_per_click, 3),
                                                  "clicks": len(robot.dice)}))
    return rows
