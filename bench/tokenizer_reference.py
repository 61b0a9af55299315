"""Times OpenAI's CLIP tokenizer (PyPI openai-clip) on a corpus: rows of [sot] + ids + [eot], padded to 77.
Prints JSON. Used by bench/tokenizer.ts.  Usage: tokenizer_reference.py CORPUS.json PASSES"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from ovseg_tools.reference.tokenizer_corpus import load_reference_tokenizer  # noqa: E402

texts = [c["text"] for c in json.loads(Path(sys.argv[1]).read_text())["cases"]]
passes = int(sys.argv[2])
tok, _ = load_reference_tokenizer()
sot, eot = tok.encoder["<|startoftext|>"], tok.encoder["<|endoftext|>"]
seconds = []
for _ in range(passes):
    t0 = time.perf_counter()
    for text in texts:
        row = [sot] + tok.encode(text) + [eot]
        row = row[:77]
        row[-1] = eot
        row += [0] * (77 - len(row))
    seconds.append(time.perf_counter() - t0)
print(json.dumps({"strings": len(texts), "seconds": seconds}))
