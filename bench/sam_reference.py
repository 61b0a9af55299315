"""The reference side of bench/sam.ts: segment-anything's SamAutomaticMaskGenerator (PyTorch, CPU)
on the same random weights and the same image, timed. Prints one JSON line.

  ../.venv/bin/python bench/sam_reference.py GEOMETRY SEED IMAGE.rgb HEIGHT WIDTH OPTIONS_JSON RUNS   (from the repo root)
"""
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from ovseg_tools.export import sam as sam_export  # noqa: E402


def main() -> None:
    geometry, seed, image, h, w, options, repeats = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6]), int(sys.argv[7])
    from segment_anything import SamAutomaticMaskGenerator

    # Every core, as ONNX Runtime uses them (Debian's torch starts with one OpenMP thread here).
    torch.set_num_threads(os.cpu_count() or 1)

    model = sam_export.reference_sam(geometry)
    model.load_state_dict(sam_export.random_state_dict(geometry, seed))
    model.eval()  # TinyViT caches its attention biases here
    rgb = np.frombuffer(Path(image).read_bytes(), np.uint8).reshape(h, w, 3)
    generator = SamAutomaticMaskGenerator(model, output_mode="binary_mask", **options)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            masks = generator.generate(rgb)
        runs.append(time.perf_counter() - start)
    print(json.dumps({"ms": 1000 * min(runs), "masks": len(masks), "threads": torch.get_num_threads(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
