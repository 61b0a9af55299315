"""Learns a small byte-level BPE vocabulary in CLIP's file format from a text corpus (the synthetic
world's captions), so a small CLIP can have a small token embedding.

The file is what OpenAI's `simple_tokenizer` and ovseg's Rust tokenizer read: a gzip text file,
a header line, then one merge per line ("t h", "th e</w>", ...). Ids: 256 byte symbols, the same
256 with "</w>", one per merge, then <|startoftext|> and <|endoftext|>: 512 + merges + 2 in all
(the manifest's `tokenizer.merges` and `clip.vocabSize`). Words are split and cleaned exactly as
the tokenizer splits them (its own functions), so every learned merge is one it can apply.
"""
from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

from ..cli import run
from ..reference.tokenizer_corpus import load_reference_module

HEADER = "#version: 0.2 (ovseg: learned from the synthetic world's captions)"


def _words(texts: list[str]) -> Counter:
    """Word counts as the tokenizer sees words: cleaned, lowercased, split by its pattern, bytes
    mapped to its unicode symbols, the last symbol marked with </w>."""
    st = load_reference_module()
    tok = st.SimpleTokenizer()
    counts: Counter = Counter()
    for text in texts:
        text = st.whitespace_clean(st.basic_clean(text)).lower()
        for token in tok.pat.findall(text):
            symbols = [tok.byte_encoder[b] for b in token.encode("utf-8")]
            counts[tuple(symbols[:-1]) + (symbols[-1] + "</w>",)] += 1
    return counts


def learn_merges(texts: list[str], merges: int) -> list[tuple[str, str]]:
    """Up to `merges` merges, most frequent pair first (ties: the smaller pair), deterministic."""
    words = _words(texts)
    learned: list[tuple[str, str]] = []
    while len(learned) < merges:
        pairs: Counter = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        learned.append(best)
        merged: Counter = Counter()
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    return learned


def write_vocab(path: Path, merges: list[tuple[str, str]]) -> None:
    """The merges in CLIP's format. No trailing newline: the tokenizer would read it as an empty merge."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join([HEADER] + [f"{a} {b}" for a, b in merges])
    # mtime=0: the same merges give the same bytes.
    with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
        gz.write(text.encode("utf-8"))


def load_tokenizer(path: Path):
    """OpenAI's tokenizer over a learned vocabulary (what training uses; the Rust one must agree)."""
    return load_reference_module().SimpleTokenizer(str(path))


def vocab_size(merges: int) -> int:
    return 512 + merges + 2


def main() -> None:
    """Learns the vocabulary from the train split's captions and writes, for the Rust tokenizer's
    parity check (crates/ovseg-core/examples/tokenizer_parity.rs), the file and a corpus of captions
    of both splits and template-filled class names with the reference ids (scripts/make-fixtures.sh:
    build/parity/tokenizer-world.json)."""
    import argparse
    import json

    from ..constants import TEMPLATES
    from ..reference.tokenizer_corpus import reference_row
    from .world import CLASSES, scene

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("out", type=Path, help="corpus JSON to write (the vocabulary goes beside it)")
    ap.add_argument("--scenes", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--merges", type=int, default=1000, help="at most this many (fewer when every word is one token)")
    args = ap.parse_args()
    train = [c for i in range(args.scenes) for c in scene(args.seed, "train", i).captions]
    merges = learn_merges(train, args.merges)
    vocab = args.out.parent / "world_vocab.txt.gz"
    write_vocab(vocab, merges)
    tok = load_tokenizer(vocab)
    test = [c for i in range(args.scenes // 5) for c in scene(args.seed, "test", i).captions]
    texts = sorted(set(train[:2000] + test + [t.format(c) for t in TEMPLATES for c in CLASSES]
                       + ["skyscraper", "A RED car!", "naïve café", "two  spaces", "emoji 🙂"]))
    cases = [{"text": t, "ids": row, "tooLong": too_long} for t in texts for row, too_long in [reference_row(tok, t)]]
    args.out.write_text(json.dumps({"vocab": str(vocab.resolve()), "merges": len(merges), "contextLength": 77,
                                    "cases": cases, "mojibakeCases": []}, ensure_ascii=False))
    print(f"learned {len(merges)} merges (vocabulary {vocab_size(len(merges))}); wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    run(main)
