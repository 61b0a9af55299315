"""A seeded corpus of tokenizer inputs and the ids OpenAI's CLIP tokenizer gives them.

The reference is `clip/simple_tokenizer.py` from the PyPI package `openai-clip` (OpenAI's
code), loaded from its file so that torch/torchvision are not needed.

Run: ../.venv/bin/python -m ovseg_tools.reference.tokenizer_corpus OUT.json  (from tools/)
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import random
from pathlib import Path

from ..cli import run
from ..constants import TEMPLATES

CONTEXT = 77


NOUNS = """wall building sky floor tree ceiling road bed windowpane grass cabinet sidewalk person earth
door table mountain plant curtain chair car water painting sofa shelf house sea mirror rug field armchair
seat fence desk rock wardrobe lamp bathtub railing cushion base box column signboard chest counter sand
sink skyscraper fireplace refrigerator grandstand path stairs runway case pool table pillow screen door
stairway river bridge bookcase blind coffee table toilet flower book hill bench countertop stove palm
kitchen island computer swivel chair boat bar arcade machine hovel bus towel light truck tower chandelier
awning streetlight booth television airplane dirt track apparel pole land bannister escalator ottoman
bottle buffet poster stage van ship fountain conveyer belt canopy washer plaything swimming pool stool
barrel basket waterfall tent bag minibike cradle oven ball food step tank trade name microwave pot animal
bicycle lake dishwasher screen blanket sculpture hood sconce vase traffic light tray ashcan fan pier crt
plate monitor bulletin board shower radiator glass clock flag cat dog horse sheep cow elephant bear zebra
giraffe backpack umbrella handbag tie suitcase frisbee skis snowboard kite skateboard surfboard wine glass
cup fork knife spoon bowl banana apple sandwich orange broccoli carrot pizza donut cake couch potted plant
dining table laptop mouse remote keyboard cell phone toaster teddy bear hair drier toothbrush""".split()

ADJECTIVES = """red green blue yellow purple orange striped dotted wooden metal glass small large tiny huge
shiny dull old new broken wet dry snowy sunny dark bright""".split()

COMMA_NAMES = ["building, edifice", "sky", "floor, flooring", "tree", "ceiling", "road, route",
               "bed", "windowpane, window", "grass", "cabinet", "sidewalk, pavement",
               "person, individual, someone, somebody, mortal, soul", "earth, ground",
               "door, double door", "table", "mountain, mount", "plant, flora, plant life",
               "curtain, drape, drapery, mantle, pall", "chair", "car, auto, automobile, machine, motorcar"]

SCRIPTS = {
    "latin_accents": "àáâãäåæçèéêëìíîïðñòóôõöøùúûüýþÿāăąćĉċčďđēĕėęěĝğġģĥħĩīĭįıĵķĸĺļľŀłńņňŉŋōŏőœŕŗřśŝşšţťŧũūŭůűųŵŷźżžſ",
    "latin_upper": "ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖØÙÚÛÜÝÞİĲŒŠŸŽẞ",
    "greek": "αβγδεζηθικλμνξοπρσςτυφχψωΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩάέήίόύώϊϋΐΰ",
    "cyrillic": "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯіїєґ",
    "cjk": "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年山水火木金土日月猫狗車電",
    "kana": "あいうえおかきくけこさしすせそアイウエオカキクケコサシスセソーッャュョ",
    "hangul": "가나다라마바사아자차카타파하한국어고양이강아지",
    "arabic": "ابتثجحخدذرزسشصضطظعغفقكلمنهوي",
    "hebrew": "אבגדהוזחטיכלמנסעפצקרשת",
    "devanagari": "अआइईउऊएऐओऔकखगघचछजझटठडढणतथदधनपफबभमयरलवशषसह्िीुूेैोौं",
    "thai": "กขคฆงจฉชซฌญฎฏฐฑฒณดตถทธนบปผฝพฟภมยรลวศษสหฬอฮะาิีึืุู",
    "emoji": "😀😂🥲😍🐱🐶🚗🌲🏠🌊⭐🔥👍🏽🇫🇷❤️✔️",
    "symbols": "©®™°±×÷€£¥¢§¶•…‰′″←→↑↓∞≈≠≤≥√∑∏∫♥♦♣♠★☆",
}

DIGITS = "0123456789٠١٢٣٤٥٦٧٨٩۰۱۲३४५০১২௧௨๑๒０１２３①②③½¼²³"
PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~¡¿«»‹›–—‘’‚“”„"
SPACES = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2003", "\u2028", "\u202f", "\x0b", "\x0c"]

ENTITIES = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&nbsp;", "&eacute;", "&Eacute;", "&EACUTE;",
            "&ntilde;", "&NTILDE;", "&nTILDE;", "&copy;", "&hellip;", "&mdash;", "&ldquo;", "&rdquo;",
            "&rsquo;", "&#39;", "&#x27;", "&#8217;", "&#x2019;", "&#65;", "&#X41;", "&#0;", "&#128;",
            "&#150;", "&#xD800;", "&#1114112;", "&#59;", "&#x;", "&#;", "&amp", "&lt", "&copy",
            "&notit;", "&notin;", "&bogus;", "&amp;amp;", "&amp;lt;", "&amp;#39;", "&SZLIG;",
            "&checkmark;", "&Jscr;", "&HilbertSpace;", "&frac12;", "&frac12", "& amp;", "&&amp;"]

FTFY_CASES = [
    "café", "cafe\u0301", "e\u0301te\u0301", "A\u030a", "\ufb01sh \ufb02ower", "\ufb00 \ufb03 \ufb04 \ufb05 \ufb06",
    "\u0132sselmeer", "\u01c6ungla", "\uff2c\uff2f\uff35\uff24\u3000\uff2e\uff2f\uff29\uff33\uff25\uff33",
    "\uff43\uff41\uff54 \uff44\uff4f\uff47", "\uff11\uff12\uff13", "\uff76\uff80\uff76\uff85",
    "\u2018single\u2019 \u201cdouble\u201d \u201elow\u201f", "don\u2019t", "it\u02bcs", "\u201bodd\u201b",
    "tab\there", "nul\x00byte", "bell\x07", "esc\x1b[31mred\x1b[0m text", "\x1b[1;32mgreen\x1b[m",
    "zero\u200bwidth", "bom\ufeffhere", "soft\u00adhyphen", "c1 \x80 \x85 \x91quote\x92 \x9d",
    "line\u2028sep", "para\u2029sep", "cr\ronly", "crlf\r\nline", "\u206adeprecated\u206f",
    "obj\ufffcrep", "<b>&amp;</b> bold", "a < b &amp; c", "x &lt; y", "first &amp;\n<second> &amp;",
    "\u212a kelvin", "\u0130stanbul", "ΣΊΣΥΦΟΣ", "ΟΔΟΣ ΟΔΟΣ.", "straße", "STRASSE", "ǅemal", "\u1e9e",
    "\u01f0", "ﬀ", "Ⅻ", "ℌ", "𝒥ohn", "\U0001d400\U0001d401", "\u00c5ngstr\u00f6m \u212bngstr\u00f6m",
]


MOJIBAKE = ["sÃ³", "âœ” No problems", "voilÃ le travail", "Ã©tÃ© Ã  Paris", "ÐŸÑ€Ð¸Ð²ÐµÑ‚", "cafÃ©", "Ã¢â‚¬Å“quotedÃ¢â‚¬Â"]


class _NoMojibakeFtfy:
    """ftfy as the reference uses it, minus `fix_encoding` (mojibake repair), which ovseg leaves out."""

    def __init__(self, ftfy):
        self._ftfy = ftfy

    def fix_text(self, text):
        return self._ftfy.fix_text(text, fix_encoding=False)


def load_reference_module(mojibake_repair: bool = True):
    """OpenAI's `clip/simple_tokenizer.py` as a module (loaded by path: `import clip` needs torchvision)."""
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the PyPI package openai-clip is not installed (see tools/requirements.txt)")
    folder = Path(spec.submodule_search_locations[0])
    module_spec = importlib.util.spec_from_file_location("clip_simple_tokenizer", folder / "simple_tokenizer.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not mojibake_repair:
        module.ftfy = _NoMojibakeFtfy(module.ftfy)
    return module


def load_reference_tokenizer(mojibake_repair: bool = True):
    module = load_reference_module(mojibake_repair)
    return module.SimpleTokenizer(), Path(module.default_bpe())


def generate(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out: list[str] = ["", " ", "   ", "\t\n", "\u3000", "\u00a0\u00a0", "\n\n\n", "a", "A", ".", "'s", "<|startoftext|>",
                      "<|endoftext|>", "x <|endoftext|> y", "<|STARTOFTEXT|>", "a photo of a cat", "a photo of a dog",
                      "Hello, world!", "a &amp; b"]
    out += NOUNS
    out += [f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}" for _ in range(200)]
    out += COMMA_NAMES
    out += [t.format(rng.choice(NOUNS + COMMA_NAMES)) for t in TEMPLATES for _ in range(12)]
    out += [rng.choice([str.upper, str.title, str.capitalize])(rng.choice(NOUNS)) for _ in range(60)]
    for chars in SCRIPTS.values():
        for _ in range(40):
            out.append("".join(rng.choice(chars) for _ in range(rng.randint(1, 12))))
        for _ in range(10):
            out.append(" ".join("".join(rng.choice(chars) for _ in range(rng.randint(1, 6))) for _ in range(3)))
    out += ["".join(rng.choice(DIGITS) for _ in range(rng.randint(1, 10))) for _ in range(80)]
    out += [f"{rng.randint(0, 10**6)} {rng.choice(NOUNS)}s" for _ in range(40)]
    out += ["".join(rng.choice(PUNCT) for _ in range(rng.randint(1, 8))) for _ in range(120)]
    out += [f"{rng.choice(NOUNS)}{rng.choice(PUNCT)}{rng.choice(NOUNS)}" for _ in range(80)]
    out += [f"{w}'{s}" for w in rng.sample(NOUNS, 20) for s in ["s", "t", "re", "ve", "m", "ll", "d", "S", "LL"]]
    out += ["".join(rng.choice(SPACES) for _ in range(rng.randint(1, 5))) for _ in range(30)]
    out += [rng.choice(SPACES).join(rng.sample(NOUNS, 3)) + rng.choice(SPACES) for _ in range(60)]
    out += ENTITIES
    out += [f"{rng.choice(NOUNS)} {rng.choice(ENTITIES)} {rng.choice(NOUNS)}" for _ in range(150)]
    out += [f"{rng.choice(ENTITIES)}{rng.choice(ENTITIES)}" for _ in range(60)]
    out += FTFY_CASES
    out += [f"{rng.choice(FTFY_CASES)} {rng.choice(NOUNS)}" for _ in range(120)]
    all_scripts = "".join(SCRIPTS.values()) + DIGITS + PUNCT
    out += ["".join(rng.choice(all_scripts + " ") for _ in range(rng.randint(1, 30))) for _ in range(200)]
    # Past the 77-token context.
    out += [" ".join(rng.choice(NOUNS) for _ in range(rng.randint(60, 120))) for _ in range(30)]
    out += ["".join(rng.choice(SCRIPTS["cjk"]) for _ in range(rng.randint(30, 90))) for _ in range(15)]
    out += ["!" * 200, "a" * 500, "a " * 80, ("&amp;" * 40)]
    return out + MOJIBAKE


def reference_row(tok, text: str) -> tuple[list[int], bool]:
    """open_clip's truncation of OpenAI's ids, and whether OpenAI's `clip.tokenize` would raise."""
    sot, eot = tok.encoder["<|startoftext|>"], tok.encoder["<|endoftext|>"]
    ids = [sot] + tok.encode(text) + [eot]
    too_long = len(ids) > CONTEXT
    if too_long:
        ids = ids[:CONTEXT]
        ids[-1] = eot
    return ids + [0] * (CONTEXT - len(ids)), too_long


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="corpus JSON to write")
    out_path = ap.parse_args().out
    import ftfy

    tok, vocab = load_reference_tokenizer()
    tok_no_repair, _ = load_reference_tokenizer(mojibake_repair=False)
    cases, mojibake = [], []
    for text in generate():
        # Strings that ftfy's mojibake repair rewrites go to their own set, compared with the
        # reference minus that repair (a documented difference, see docs/tokenizer.md).
        if ftfy.fix_text(text) != ftfy.fix_text(text, fix_encoding=False):
            row, too_long = reference_row(tok_no_repair, text)
            mojibake.append({"text": text, "ids": row, "tooLong": too_long})
        else:
            row, too_long = reference_row(tok, text)
            cases.append({"text": text, "ids": row, "tooLong": too_long})
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(
        {"vocab": str(vocab), "contextLength": CONTEXT, "cases": cases, "mojibakeCases": mojibake}, ensure_ascii=False))
    print(f"wrote {len(cases)} cases ({sum(c['tooLong'] for c in cases)} past the context) "
          f"and {len(mojibake)} mojibake cases to {out_path}")


if __name__ == "__main__":
    run(main)
