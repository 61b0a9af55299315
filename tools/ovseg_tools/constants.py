"""Constants shared by the exporter, the references and the recipe. Standard library only: the
fixture stamps (scripts/make-fixtures.sh) hash this file for every set, so keep it to what is shared."""

# CLIP's pixel normalization, in 0..1 units (the manifest's pixelMean / pixelStd).
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# Merges of OpenAI's vocabulary file (bpe_simple_vocab_16e6.txt.gz) that CLIP uses.
OPENAI_MERGES = 48894

# OVSeg's 14 prompt templates (the manifest's default `templates`).
TEMPLATES = [
    "a photo of a {}.", "This is a photo of a {}", "There is a {} in the scene",
    "There is the {} in the scene", "a photo of a {} in the scene", "a photo of a small {}.",
    "a photo of a medium {}.", "a photo of a large {}.", "This is a photo of a small {}.",
    "This is a photo of a medium {}.", "This is a photo of a large {}.",
    "There is a small {} in the scene.", "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
]

# The mask generator's contract (docs/model-format.md, "mask_generator.onnx"): MaskFormer's
# normalization (ImageNet's, in 0..255 units), input padded to a multiple of 32, masks at 1/4 scale.
IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]
SIZE_DIVISIBILITY = 32
MASK_STRIDE = 4
