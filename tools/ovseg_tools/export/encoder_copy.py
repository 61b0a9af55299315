"""What fp16.py and int8.py share: a copy of a model directory whose two CLIP encoders are rewritten
by one function and whose other files are copied unchanged; the manifest records the conversion."""

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


def cli(module: str, doc: str, convert_dir: Callable[[Path, Path], list], key: str):
    """The entry point of `python -m {module} SRC DST`: prints `{"out": DST, key: graphs}`."""

    def main(argv=None) -> None:
        parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n")[0])
        parser.add_argument("src", type=Path)
        parser.add_argument("dst", type=Path)
        args = parser.parse_args(argv)
        print(json.dumps({"out": str(args.dst), key: convert_dir(args.src, args.dst)}))

    return main
