"""The learned BPE vocabulary: deterministic, in CLIP's format, and applied by OpenAI's tokenizer as learned."""
import gzip

from ovseg_tools.recipe.bpe import HEADER, learn_merges, load_tokenizer, vocab_size, write_vocab


def test_learning_is_deterministic_and_greedy():
    texts = ["the red star", "the red ring", "the red star"]
    merges = learn_merges(texts, 50)
    assert merges == learn_merges(texts, 50)
    # The most frequent pair first: "the</w>" and "red</w>" appear three times.
    assert merges[0] in {("t", "h"), ("r", "e"), ("h", "e</w>"), ("e", "d</w>")}
    # Every word ends as one token; no merge is left to learn.
    assert len(learn_merges(texts, 1000)) == len(merges)


def test_file_format_and_tokenizer(tmp_path):
    merges = learn_merges(["a small red star on the grass", "a large blue ring near the water"], 200)
    path = tmp_path / "v.txt.gz"
    write_vocab(path, merges)
    lines = gzip.open(path).read().decode().split("\n")
    assert lines[0] == HEADER and len(lines) == 1 + len(merges) and lines[-1]  # no trailing newline
    first = path.read_bytes()
    write_vocab(path, merges)
    assert path.read_bytes() == first
    tok = load_tokenizer(path)
    assert len(tok.encoder) == vocab_size(len(merges))
    ids = tok.encode("a small red star")
    assert len(ids) == 4 and tok.decode(ids).strip() == "a small red star"  # one token per known word
    assert tok.decode(tok.encode("skyscraper")).strip() == "skyscraper"  # unknown words fall back to bytes
