"""What fp16.py and int8.py share: the two CLIP encoders rewritten by one function, either beside the
float32 ones in the same directory (the manifest's `graphs.int8` / `graphs.float16`, picked at load
time by the `precision` option, format version 3) or in a copy of the directory whose other files
are copied unchanged. The manifest records the conversion."""

import argparse
import json
import shutil
from pathlib import Path
from typing import Callable


def convert_encoders(src: Path, dst: Path, convert_graph: Callable[[Path, Path], None], kind: str, record) -> list:
    """`convert_graph(src_graph, dst_graph)` for the image and text encoders; the manifest's name
    gains `-{kind}` and `source[kind]` is `record(graphs)`. Returns the converted graphs' names."""
    manifest = json.loads((src / "manifest.json").read_text())
    graphs = [manifest["graphs"]["imageEncoder"], manifest["graphs"]["textEncoder"]]
    dst.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        if entry.name not in graphs and entry.name != "manifest.json":
            shutil.copyfile(entry, dst / entry.name)
    for name in graphs:
        convert_graph(src / name, dst / name)
    manifest["name"] = manifest.get("name", "model") + f"-{kind}"
    manifest.setdefault("source", {})[kind] = record(graphs)
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return graphs


# The format version that added graphs.int8 / graphs.float16.
VARIANTS_VERSION = 3


def add_beside(model: Path, convert_graph: Callable[[Path, Path], None], kind: str, precision: str, record) -> list:
    """`convert_graph` of the image and text encoders into `<stem>.<kind>.onnx` beside them;
    `graphs[precision]` names them and `source[kind]` is `record(graphs)`. Returns their names."""
    manifest = json.loads((model / "manifest.json").read_text())
    graphs = [manifest["graphs"]["imageEncoder"], manifest["graphs"]["textEncoder"]]
    written = [str(Path(name).with_suffix(f".{kind}.onnx")) for name in graphs]
    for name, out in zip(graphs, written):
        convert_graph(model / name, model / out)
    manifest["graphs"][precision] = {"imageEncoder": written[0], "textEncoder": written[1]}
    manifest["version"] = max(manifest["version"], VARIANTS_VERSION)
    manifest.setdefault("source", {})[kind] = record(written)
    (model / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return written


def cli(module: str, doc: str, convert_dir: Callable[[Path, Path | None], list], key: str):
    """The entry point of `python -m {module} SRC [DST]`: encoders beside SRC's (no DST) or a copy
    in DST; prints `{"out": DST or SRC, key: graphs}`."""

    def main(argv=None) -> None:
        parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n")[0])
        parser.add_argument("src", type=Path, help="model directory")
        parser.add_argument("dst", type=Path, nargs="?",
                            help="write a copy here (default: add the converted encoders beside SRC's)")
        args = parser.parse_args(argv)
        print(json.dumps({"out": str(args.dst or args.src), key: convert_dir(args.src, args.dst)}))

    return main
