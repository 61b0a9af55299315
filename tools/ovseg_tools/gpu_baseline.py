"""What PyTorch does with the same CLIP towers on the same GPU (python -m ovseg_tools.gpu_baseline OUT.json).

The yardstick for scripts/gpu-check.sh's ONNX Runtime numbers: timm's ViT-B/16 and ViT-L/14 CLIP
image towers (random weights, same geometry as the exported encoders, without ovseg's mask-prompt
substitution) over 100 crops of 224x224, in float32, TF32 and float16 autocast, in batches of 1
and 100. Median of 10 timed passes after 3 warm-ups, CUDA events. Needs torch with CUDA and timm.
"""

import argparse
import json
import statistics

from .cli import run

CROPS = 100


def time_tower(name: str) -> list:
    """Rows of ms per 100 crops for one timm tower, every precision and batch size."""
    import timm
    import torch

    model = timm.create_model(name, pretrained=False, num_classes=0).cuda().eval()
    pixels = torch.randn(CROPS, 3, 224, 224, device="cuda")
    rows = []
    for precision in ("float32", "tf32", "float16"):
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
        for batch in (1, CROPS):

            def one_pass():
                with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=precision == "float16"):
                    for i in range(0, CROPS, batch):
                        model(pixels[i : i + batch])

            for _ in range(3):
                one_pass()
            times = []
            for _ in range(10):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                one_pass()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            row = {"model": name, "precision": precision, "batch": batch, "msPer100Crops": statistics.median(times)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="JSON report")
    out = ap.parse_args().out
    try:
        import timm
        import torch
    except ImportError as exc:
        raise RuntimeError("needs torch with CUDA and timm") from exc
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device")
    results = {"torch": torch.__version__, "timm": timm.__version__, "device": torch.cuda.get_device_name(0), "rows": []}
    for name in ("vit_base_patch16_clip_224", "vit_large_patch14_clip_224"):
        results["rows"] += time_tower(name)
        torch.cuda.empty_cache()
    with open(out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    run(main)
