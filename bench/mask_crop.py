"""Mask cropping of 100 soft masks on a 640x480 image (binarize, box, blend, normalize, bicubic to 224,
nearest mask): ovseg's Rust core (`cargo bench -p ovseg-core --bench mask_crop`) vs the PyTorch reference
of the same step (ovseg_tools.reference.mask_crop), same machine, one run.

  .venv/bin/python bench/mask_crop.py   (needs build/crops: bash scripts/make-fixtures.sh)
"""
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from ovseg_tools.reference.mask_crop import mask_crops  # noqa: E402

RUNS = 11
index = json.loads((ROOT / "build/crops/index.json").read_text())
case = next(c for c in index["cases"] if c["name"] == "bench-100-blobs")
folder = Path(case["dir"])
h, w, q = case["height"], case["width"], case["queries"]
image = np.fromfile(folder / "image_u8.bin", dtype=np.uint8).reshape(h, w, 3)
masks = np.fromfile(folder / "masks_f32.bin", dtype="<f4").reshape(q, h, w)

def torch_median(threads: int) -> float:
    torch.set_num_threads(threads)
    mask_crops(image, masks, case["threshold"])
    seconds = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        mask_crops(image, masks, case["threshold"])
        seconds.append(time.perf_counter() - t0)
    return sorted(seconds)[RUNS // 2]


default_threads = torch.get_num_threads()
torch_default = torch_median(default_threads)
torch_2 = torch_median(2)

out = subprocess.run(
    ["cargo", "bench", "-q", "-p", "ovseg-core", "--bench", "mask_crop", "--",
     str(ROOT / "build/crops"), "bench-100-blobs", str(RUNS)],
    cwd=ROOT, check=True, capture_output=True, text=True,
)
ours = json.loads(out.stdout.strip().splitlines()[-1])
fresh, reused = ours["freshOutputSeconds"], ours["reusedOutputSeconds"]
print(json.dumps({"masks": q, "image": f"{w}x{h}", "torchDefaultThreads": default_threads,
                  "pytorchDefaultMedianS": torch_default, "pytorch2ThreadsMedianS": torch_2,
                  "oursFreshOutputMedianS": fresh, "oursReusedOutputMedianS": reused}))
plural = "s" if default_threads > 1 else ""
print(f"| implementation | median of {RUNS} (ms) | vs PyTorch default | vs PyTorch 2 threads |\n|---|---|---|---|\n"
      f"| PyTorch reference, torch default ({default_threads} thread{plural}) | {torch_default * 1e3:.1f} | | |\n"
      f"| PyTorch reference, 2 threads | {torch_2 * 1e3:.1f} | | |\n"
      f"| ovseg `crop_masks` (fresh 60 MB output each call) | {fresh * 1e3:.1f} | "
      f"{torch_default / fresh:.1f}x | {torch_2 / fresh:.1f}x |\n"
      f"| ovseg `crop_masks_into` (output buffers reused) | {reused * 1e3:.1f} | "
      f"{torch_default / reused:.1f}x | {torch_2 / reused:.1f}x |")
