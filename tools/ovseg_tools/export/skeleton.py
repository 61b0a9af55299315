"""A model directory without its weights, and back (python -m ovseg_tools.export.skeleton).

A GPU machine may have no network and take only tens of MB: a ViT-L/14 directory is 2 GB. `pack`
keeps every file and graph but replaces each large float initializer by its shape, mean and
standard deviation; `unpack` draws seeded normal values with those statistics. Applied to a
random-weight export, the result is another random model of the same distribution (activations
of the same scale), which is all a speed or CUDA-vs-CPU check needs. Integer and small tensors
(index tables, masks, norms) and any with a non-finite value (an attention mask) are kept exactly, so the graph computes what the original does.
Needs the `onnx` package (and numpy); no torch.
"""

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from ..cli import run

# Float initializers up to this many elements stay in the graph as they are.
KEEP_ELEMENTS = 4096
STATS_FILE = "skeleton.json"


def _onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise RuntimeError("needs the onnx package (pip install onnx; tools/requirements.txt pins one)") from exc
    return onnx, numpy_helper


def pack(src: Path, dst: Path) -> dict:
    onnx, numpy_helper = _onnx()
    dst.mkdir(parents=True, exist_ok=True)
    stats = {}
    for entry in sorted(src.iterdir()):
        if entry.suffix != ".onnx":
            shutil.copyfile(entry, dst / entry.name)
            continue
        model = onnx.load(str(entry))
        removed = []
        kept = []
        for tensor in model.graph.initializer:
            array = numpy_helper.to_array(tensor)
            if array.dtype == np.float32 and array.size > KEEP_ELEMENTS and np.isfinite(array).all():
                removed.append(
                    {
                        "name": tensor.name,
                        "shape": list(array.shape),
                        "mean": float(array.mean(dtype=np.float64)),
                        "std": float(array.std(dtype=np.float64)),
                    }
                )
            else:
                kept.append(tensor)
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
        onnx.save(model, str(dst / entry.name))
        stats[entry.name] = removed
    (dst / STATS_FILE).write_text(json.dumps(stats, indent=1) + "\n")
    return {name: len(r) for name, r in stats.items()}


def unpack(src: Path, dst: Path, seed: int) -> dict:
    onnx, numpy_helper = _onnx()
    stats = json.loads((src / STATS_FILE).read_text())
    dst.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        if entry.suffix != ".onnx" and entry.name != STATS_FILE:
            shutil.copyfile(entry, dst / entry.name)
    filled = {}
    for index, name in enumerate(sorted(stats)):
        model = onnx.load(str(src / name))
        rng = np.random.default_rng([seed, index])
        for spec in stats[name]:
            values = rng.standard_normal(spec["shape"], dtype=np.float32)
            values *= np.float32(spec["std"])
            values += np.float32(spec["mean"])
            model.graph.initializer.append(numpy_helper.from_array(values, spec["name"]))
        onnx.save(model, str(dst / name))
        filled[name] = len(stats[name])
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest.setdefault("source", {})["skeleton"] = {"seed": seed}
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return filled


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ovseg_tools.export.skeleton", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="model directory -> skeleton directory")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    u = sub.add_parser("unpack", help="skeleton directory -> model directory with seeded weights")
    u.add_argument("src", type=Path)
    u.add_argument("dst", type=Path)
    u.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "pack":
        result = pack(args.src, args.dst)
    else:
        result = unpack(args.src, args.dst, args.seed)
    print(json.dumps({"command": args.command, "out": str(args.dst), "filledOrRemoved": result}))


if __name__ == "__main__":
    run(main)
