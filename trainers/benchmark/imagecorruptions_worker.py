"""The imagecorruptions side of ``scripts/benchmark.py corruptions``, run as a program in a Python environment of its
own (imagecorruptions needs opencv-python, which clashes with the opencv-python-headless of the project's
environment, and its last release, 1.1.2 of 2020, needs setuptools' pkg_resources):

    PYTHON trainers/benchmark/imagecorruptions_worker.py IMAGES.npy THREADS

It imports numpy and imagecorruptions only (nothing of this project), loads the uint8 (N, H, W, 3) images, then
answers one JSON line per request read from stdin: {"family": name, "severity": s} -> {"seconds": t}, the time to
corrupt every image one by one with `imagecorruptions.corrupt`, as its users call it; an empty line ends it.

imagecorruptions 1.1.2 calls scikit-image's `gaussian(..., multichannel=True)` (gaussian_blur, glass_blur), an
argument scikit-image 0.19 replaced by `channel_axis`; where it is gone, the call is mapped to `channel_axis=-1`, the
same computation, so that those families run at all.
"""

from __future__ import annotations

import inspect
import json
import sys
import time

import numpy as np


def map_multichannel(corruptions: object) -> None:
    """Give imagecorruptions a scikit-image `gaussian` that takes `multichannel` again (see the module docstring)."""
    gaussian = corruptions.gaussian
    if "multichannel" in inspect.signature(gaussian).parameters:
        return

    def gaussian_multichannel(*args: object, multichannel: bool | None = None, **kwargs: object) -> np.ndarray:
        if multichannel:
            kwargs.setdefault("channel_axis", -1)
        return gaussian(*args, **kwargs)

    corruptions.gaussian = gaussian_multichannel


def main() -> None:
    import imagecorruptions
    import imagecorruptions.corruptions

    map_multichannel(imagecorruptions.corruptions)
    images = np.load(sys.argv[1])
    try:
        import cv2

        cv2.setNumThreads(int(sys.argv[2]))  # as many threads as the project's side uses
    except ImportError:
        pass
    np.random.seed(0)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        request = json.loads(line)
        start = time.perf_counter()
        for image in images:
            imagecorruptions.corrupt(image, severity=request["severity"], corruption_name=request["family"])
        print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


if __name__ == "__main__":
    main()
