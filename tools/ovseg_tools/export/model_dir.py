"""Exporter: a CLIP / OVSeg checkpoint (or random weights) -> an ovseg model directory.

Inputs it takes:
  * an OpenAI-layout CLIP state dict of any ViT geometry (a TorchScript `.pt` as OpenAI
    publishes them, or a pickled state dict), optionally with `visual.mask_embedding`;
  * an OVSeg full checkpoint (`ckpt["model"]` with `clip_adapter.clip_model.*`,
    `clip_adapter.non_object_embedding`, and the MaskFormer generator `backbone.*` /
    `sem_seg_head.*` of the released Swin-B and R101c models: export/maskformer.py), with the
    inference defaults of one of OVSeg's YAML configs (`--config`; without it, the variant's
    evaluation config);
  * `--random tiny|vit-b-16|vit-l-14` for test models (fixed seed), optionally with a random mask
    generator (`--generator-queries N`, export/mask_generator.py); `--random ovseg-swinb|ovseg-r101c`:
    a whole random checkpoint in the released layout, through the same path as a real one.

Writes manifest.json, image_encoder.onnx, text_encoder.onnx, the tokenizer vocabulary, and
mask_prompts.npy / no_object.npy / mask_generator.onnx when there are any. Format: docs/model-format.md.
Every checkpoint key is checked before anything is written (export/ovseg_checkpoint.py), and the
directory is written beside OUT and renamed into place at the end: a failed export leaves nothing.

Examples (from tools/):
  ../.venv/bin/python -m ovseg_tools.export --random tiny --seed 0 --prompt-depth 3 --no-object \
      --generator-queries 16 --out ../models/tiny-random
  ../.venv/bin/python -m ovseg_tools.export --checkpoint ViT-B-16.pt --out ../build/vit-b-16
  ../.venv/bin/python -m ovseg_tools.export --checkpoint ovseg_swinbase_vitL14_ft_mpt.pth --out ../build/ovseg-swinb
  ../.venv/bin/python -m ovseg_tools.export --checkpoint ovseg_swinbase_vitL14_ft_mpt.pth \
      --config ovseg_swinB_vitL_demo.yaml --out ../build/ovseg-swinb-demo
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..clip_reference import TINY, VIT_B_16, VIT_L_14, Geometry, geometry_from_state_dict, random_state_dict
from ..constants import CLIP_MEAN, CLIP_STD, OPENAI_MERGES, TEMPLATES
from .graphs import ImageGraph, TextGraph
from .mask_generator import export_generator, random_generator
from .maskformer import BACKBONE, HEAD, R101C, SWIN_B
from .ovseg_checkpoint import CLIP_PREFIX, CONFIGS, EVAL_CONFIG, NO_OBJECT, OVSegConfig, check_clip_keys, \
    check_ovseg_keys, generator_spec, load_generator, random_checkpoint, read_config

# The format version written: 3, whose text encoder takes any token length up to the context
# (older readers expect exactly the context and would refuse the graph).
FORMAT_VERSION = 3
RANDOM_GEOMETRIES = {"tiny": TINY, "vit-b-16": VIT_B_16, "vit-l-14": VIT_L_14}
# Random weights in the released layout of OVSeg's two checkpoints (benchmarks, docs/ovseg-models.md).
RANDOM_OVSEG = {"ovseg-swinb": (SWIN_B, VIT_L_14), "ovseg-r101c": (R101C, VIT_B_16)}
# Keys of OpenAI's TorchScript archives that are attributes, not weights (OpenAI's build_model drops them).
OPENAI_ATTRIBUTES = ("input_resolution", "context_length", "vocab_size")


@dataclass
class Checkpoint:
    clip: dict  # OpenAI-layout CLIP state dict (with visual.mask_embedding when there are prompts)
    no_object: torch.Tensor | None
    ovseg: dict | None  # the whole OVSeg `model` dict, or None for a CLIP file


def default_vocab() -> Path:
    """OpenAI's vocabulary file, as shipped in the PyPI package openai-clip."""
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pass --vocab, or install the PyPI package openai-clip (tools/requirements.txt)")
    return Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"


def ovseg_checkpoint(model: dict) -> Checkpoint:
    clip = {k[len(CLIP_PREFIX):]: v for k, v in model.items() if k.startswith(CLIP_PREFIX)}
    return Checkpoint(clip, model.get(NO_OBJECT), model)


def read_checkpoint(path: Path) -> Checkpoint:
    try:
        obj = torch.load(path, map_location="cpu")
    except (RuntimeError, pickle.UnpicklingError):
        try:
            obj = torch.jit.load(path, map_location="cpu")  # OpenAI's released .pt files are TorchScript
        except RuntimeError as exc:
            raise ValueError(f"{path}: neither a PyTorch checkpoint nor a TorchScript archive") from exc
    if isinstance(obj, torch.jit.ScriptModule):
        obj = obj.state_dict()
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a state dict or checkpoint")
    if any(k.startswith(CLIP_PREFIX) for k in obj):
        return ovseg_checkpoint(obj)
    if "visual.conv1.weight" not in obj:
        raise ValueError(f"{path}: neither an OpenAI CLIP state dict nor an OVSeg checkpoint (no visual.conv1.weight)")
    return Checkpoint({k: v for k, v in obj.items() if k not in OPENAI_ATTRIBUTES}, None, None)


def export_model(
    sd: dict,
    g: Geometry,
    out: Path,
    *,
    name: str,
    vocab: Path,
    merges: int | None,
    no_object: torch.Tensor | None = None,
    source: dict | None = None,
    generator: torch.nn.Module | None = None,
    processing: tuple[int, int] | None = None,
    defaults: dict | None = None,
    generator_normalization: tuple[list[float], list[float]] | None = None,
    templates: list[str] = TEMPLATES,
    opset: int = 17,
) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        image = ImageGraph(sd, g).eval()
        p = g.grid ** 2
        example = (torch.zeros(2, 3, g.image_size, g.image_size), torch.ones(2, p),
                   torch.zeros(g.vision_layers, p, g.vision_width), torch.zeros(g.vision_layers))
        torch.onnx.export(
            image, example, str(out / "image_encoder.onnx"), opset_version=opset,
            input_names=["pixels", "keep", "prompts", "prompt_gate"], output_names=["image_features"],
            dynamic_axes={"pixels": {0: "batch"}, "keep": {0: "batch"}, "image_features": {0: "batch"}},
        )
        text = TextGraph(sd, g).eval()
        torch.onnx.export(
            text, (torch.zeros(2, g.context_length, dtype=torch.int64),), str(out / "text_encoder.onnx"),
            opset_version=opset, input_names=["input_ids"], output_names=["text_features"],
            dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "text_features": {0: "batch"}},
        )
    shutil.copyfile(vocab, out / vocab.name)

    manifest: dict = {
        "format": "ovseg-model",
        "version": FORMAT_VERSION,
        "name": name,
        "clip": {
            "imageSize": g.image_size, "patchSize": g.patch_size, "visionWidth": g.vision_width,
            "visionLayers": g.vision_layers, "embedDim": g.embed_dim, "contextLength": g.context_length,
            "vocabSize": g.vocab_size,
        },
        "pixelMean": CLIP_MEAN,
        "pixelStd": CLIP_STD,
        "graphs": {"imageEncoder": "image_encoder.onnx", "textEncoder": "text_encoder.onnx"},
        "tokenizer": {"vocab": vocab.name, "merges": merges},
        "maskPrompts": None,
        "noObjectEmbedding": None,
        "templates": templates,
    }
    prompts = sd.get("visual.mask_embedding")
    if prompts is not None:
        np.save(out / "mask_prompts.npy", prompts.detach().float().numpy().astype("<f4"))
        manifest["maskPrompts"] = {"file": "mask_prompts.npy", "depth": int(prompts.shape[0])}
    if no_object is not None:
        np.save(out / "no_object.npy", no_object.detach().float().reshape(1, -1).numpy().astype("<f4"))
        manifest["noObjectEmbedding"] = "no_object.npy"
    if generator is not None:
        manifest["generator"] = export_generator(generator, out, opset, generator_normalization)
    if processing is not None:
        manifest["processing"] = {"shortSide": processing[0], "maxSize": processing[1]}
    if defaults:
        manifest["defaults"] = defaults
    if source:
        manifest["source"] = source
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def ovseg_config(arg: str | None, model: dict) -> OVSegConfig:
    """`--config` (a YAML file, or the name of one of OVSeg's configs), else the evaluation config of
    the variant the weights show."""
    if arg is None:
        return CONFIGS[EVAL_CONFIG[generator_spec(model, None).variant]]
    path = Path(arg)
    if path.is_file():
        return read_config(path)
    if arg in CONFIGS:
        return CONFIGS[arg]
    raise ValueError(f"--config {arg}: no such file, and not one of OVSeg's configs ({', '.join(CONFIGS)})")


def staged(out: Path) -> Path:
    """A fresh folder beside `out` to write into (renamed to `out` by `publish`)."""
    stage = out.parent / f".{out.name}.partial"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    return stage


def publish(stage: Path, out: Path) -> None:
    if out.exists():
        if out.is_dir() and (not any(out.iterdir()) or (out / "manifest.json").is_file()):
            shutil.rmtree(out)
        else:
            raise ValueError(f"{out} exists and is not a model directory: not replacing it")
    os.replace(stage, out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m ovseg_tools.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="OpenAI CLIP .pt / state dict, or an OVSeg .pth")
    src.add_argument("--random", choices=sorted(RANDOM_GEOMETRIES) + sorted(RANDOM_OVSEG),
                     help="random weights of this geometry (ovseg-*: a whole OVSeg checkpoint's layout)")
    ap.add_argument("--out", type=Path, required=True, help="model directory to write (replaced if it is one)")
    ap.add_argument("--name", help="model name for the manifest (default: the output folder's name)")
    ap.add_argument("--config", help="OVSeg checkpoints: one of OVSeg's YAML configs (a file, or its name: "
                    f"{', '.join(CONFIGS)}); default: the evaluation config of the checkpoint's variant")
    ap.add_argument("--vocab", type=Path, help="BPE vocabulary file (default: OpenAI's, from openai-clip)")
    ap.add_argument("--merges", type=int, help=f"merges to use (default {OPENAI_MERGES} for OpenAI's file, else all)")
    ap.add_argument("--vision-heads", type=int, help="attention heads of the ViT (default width // 64)")
    ap.add_argument("--text-heads", type=int, help="attention heads of the text transformer (default width // 64)")
    ap.add_argument("--seed", type=int, default=0, help="seed for --random")
    ap.add_argument("--prompt-depth", type=int, default=0, help="random mask prompts of this depth (--random)")
    ap.add_argument("--shared-prompt", action="store_true", help="one prompt per depth ([depth, 1, width])")
    ap.add_argument("--no-object", action="store_true", help="random no-object embedding (--random)")
    ap.add_argument("--generator-queries", type=int, default=0,
                    help="random mask generator with this many queries (--random; needs --no-object)")
    ap.add_argument("--processing", type=int, nargs=2, metavar=("SHORT_SIDE", "MAX_SIZE"),
                    help="the size segment() processes images at (default: the config's, else OVSeg's 640 2560)")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--quantize", choices=["int8"],
                    help="also write int8 CLIP encoders beside the float32 ones (export/int8.py; load with precision 'int8')")
    ap.add_argument("--fp16", action="store_true",
                    help="also write float16 CLIP encoders beside the float32 ones (export/fp16.py; load with precision 'float16')")
    args = ap.parse_args(argv)
    if args.generator_queries and not (args.random in RANDOM_GEOMETRIES and args.no_object):
        ap.error("--generator-queries needs --random and --no-object")
    if args.config and args.random not in (None, *RANDOM_OVSEG):
        ap.error("--config needs an OVSeg checkpoint")

    vocab = args.vocab or default_vocab()
    merges = args.merges if args.merges is not None else (OPENAI_MERGES if vocab.name == default_vocab().name else None)
    processing = tuple(args.processing) if args.processing else None
    generator, config = None, None
    if args.random in RANDOM_GEOMETRIES:
        g = RANDOM_GEOMETRIES[args.random]
        sd = random_state_dict(g, args.seed, args.prompt_depth, args.shared_prompt)
        no_object = torch.randn(1, g.embed_dim, generator=torch.Generator().manual_seed(args.seed + 1)) \
            if args.no_object else None
        source = {"random": args.random, "seed": args.seed}
        generator = random_generator(g.embed_dim, args.seed + 2, args.generator_queries) \
            if args.generator_queries else None
    else:
        if args.random:
            spec, clip_geometry = RANDOM_OVSEG[args.random]
            ckpt = ovseg_checkpoint(random_checkpoint(spec, clip_geometry, args.seed))
            source = {"random": args.random, "seed": args.seed}
        else:
            ckpt = read_checkpoint(args.checkpoint)
            source = {"checkpoint": args.checkpoint.name}
        sd, no_object = ckpt.clip, ckpt.no_object
        g = geometry_from_state_dict(sd, args.vision_heads, args.text_heads)
        check_clip_keys(sd, g)
        if ckpt.ovseg is not None:
            check_ovseg_keys(ckpt.ovseg)
            if any(k.startswith((BACKBONE, HEAD)) for k in ckpt.ovseg):
                config = ovseg_config(args.config, ckpt.ovseg)
                generator = load_generator(ckpt.ovseg, config)
                if no_object is None:
                    raise ValueError(f"checkpoint key {NO_OBJECT} is missing (the generator's classes need it)")
                if generator.spec.head.text_dim != g.embed_dim:
                    raise ValueError(f"the generator's class head gives {generator.spec.head.text_dim}-d embeddings, "
                                     f"CLIP's are {g.embed_dim}-d")
                processing = processing or (config.short_side, config.max_size)
                source["config"] = config.name
            elif args.config:
                ap.error("--config: this checkpoint has no mask generator (backbone.* / sem_seg_head.*)")
    stage = staged(args.out)
    try:
        manifest = export_model(
            sd, g, stage, name=args.name or args.out.name, vocab=vocab, merges=merges, no_object=no_object,
            source=source, generator=generator, processing=processing,
            defaults=config.defaults() if config else None,
            generator_normalization=(list(config.pixel_mean), list(config.pixel_std)) if config else None,
            opset=args.opset)
        if args.quantize == "int8":
            from . import int8
            int8.convert_dir(stage, None)
        if args.fp16:
            from . import fp16
            fp16.convert_dir(stage, None)
        manifest = json.loads((stage / "manifest.json").read_text())
        publish(stage, args.out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    summary = {"out": str(args.out), "clip": manifest["clip"], "maskPrompts": manifest["maskPrompts"]}
    if config is not None:
        summary["generator"] = {"variant": generator.spec.variant, "config": config.name,
                                "defaults": manifest["defaults"], "processing": manifest["processing"]}
    print(json.dumps(summary))
