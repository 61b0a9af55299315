"""The ONNX tools that need no torch: weightless skeletons that come back as models of the same
shapes and statistics, float16 and int8 CLIP encoders (in a copy of the model, or beside the
float32 ones) that run and stay close to the float32 ones, and a CUDA library trimmed to one architecture's kernels (scripts/gpu-check.sh)."""
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from ovseg_tools.cuda_fatbin import FATBIN_MAGIC, keep_architecture
from ovseg_tools.export import fp16, int8
from ovseg_tools.export.skeleton import KEEP_ELEMENTS, STATS_FILE, pack, unpack

TINY = Path(__file__).resolve().parents[2] / "models" / "tiny-random"


def initializers(path: Path) -> dict:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def test_skeleton_round_trip(tmp_path):
    removed = pack(TINY, tmp_path / "skeleton")
    assert removed["image_encoder.onnx"] > 0 and removed["text_encoder.onnx"] > 0
    assert (tmp_path / "skeleton" / STATS_FILE).is_file()
    unpack(tmp_path / "skeleton", tmp_path / "a", seed=3)
    unpack(tmp_path / "skeleton", tmp_path / "b", seed=3)
    unpack(tmp_path / "skeleton", tmp_path / "c", seed=4)
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["source"]["skeleton"] == {"seed": 3}
    for name in ("image_encoder.onnx", "text_encoder.onnx", "mask_generator.onnx"):
        original, a, b, c = (initializers(d / name) for d in (TINY, tmp_path / "a", tmp_path / "b", tmp_path / "c"))
        assert a.keys() == original.keys()
        drawn = 0
        for key, value in original.items():
            assert a[key].shape == value.shape and a[key].dtype == value.dtype, key
            np.testing.assert_array_equal(a[key], b[key])  # the seed decides every value
            if value.dtype == np.float32 and value.size > KEEP_ELEMENTS and np.isfinite(value).all():
                drawn += 1
                assert not np.array_equal(a[key], c[key]), key
                assert abs(a[key].mean() - value.mean()) < 0.1 * value.std() + 1e-6, key
                assert a[key].std() == pytest.approx(value.std(), rel=0.1), key
            else:  # index tables, masks, small tensors: kept exactly
                np.testing.assert_array_equal(a[key], value)
        assert drawn == removed[name]
    for other in ("mask_prompts.npy", "no_object.npy", "bpe_simple_vocab_16e6.txt.gz"):
        assert (tmp_path / "a" / other).read_bytes() == (TINY / other).read_bytes()


def encode_both(original: Path, converted: Path) -> list:
    """Unit image features of the two directories' image encoders on the same masked crops."""
    import onnxruntime as ort

    clip = json.loads((TINY / "manifest.json").read_text())["clip"]
    size, patch, layers, width = clip["imageSize"], clip["patchSize"], clip["visionLayers"], clip["visionWidth"]
    patches = (size // patch) ** 2
    rng = np.random.default_rng(0)
    feeds = {
        "pixels": rng.standard_normal((4, 3, size, size), dtype=np.float32),
        "keep": (rng.random((4, patches)) > 0.5).astype(np.float32),
        "prompts": rng.standard_normal((layers, patches, width), dtype=np.float32) * 0.1,
        "prompt_gate": np.ones(layers, dtype=np.float32),
    }
    outputs = []
    for path in (original / "image_encoder.onnx", converted / "image_encoder.onnx"):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.type for i in session.get_inputs()] == ["tensor(float)"] * 4  # float32 at the boundary
        features = session.run(None, feeds)[0]
        outputs.append(features / np.linalg.norm(features, axis=1, keepdims=True))
    return outputs


def test_fp16_encoders_run_close_to_float32(tmp_path):
    graphs = fp16.convert_dir(TINY, tmp_path / "half")
    assert graphs == ["image_encoder.onnx", "text_encoder.onnx"]
    assert (tmp_path / "half" / "mask_generator.onnx").read_bytes() == (TINY / "mask_generator.onnx").read_bytes()
    manifest = json.loads((tmp_path / "half" / "manifest.json").read_text())
    assert manifest["source"]["fp16"] == graphs
    half_model = onnx.load(str(tmp_path / "half" / "image_encoder.onnx"))
    types = {t.data_type for t in half_model.graph.initializer if len(t.dims) >= 2}
    assert onnx.TensorProto.FLOAT16 in types and onnx.TensorProto.FLOAT not in types
    a, b = encode_both(TINY, tmp_path / "half")
    assert np.abs(a - b).max() < 1e-2


def test_int8_encoders_run_close_to_float32(tmp_path):
    graphs = int8.convert_dir(TINY, tmp_path / "int8")
    assert graphs == ["image_encoder.onnx", "text_encoder.onnx"]
    assert (tmp_path / "int8" / "mask_generator.onnx").read_bytes() == (TINY / "mask_generator.onnx").read_bytes()
    assert sorted(p.name for p in (tmp_path / "int8").iterdir()) == sorted(p.name for p in TINY.iterdir())
    manifest = json.loads((tmp_path / "int8" / "manifest.json").read_text())
    assert manifest["source"]["int8"]["graphs"] == graphs
    ops = {n.op_type for n in onnx.load(str(tmp_path / "int8" / "image_encoder.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops
    a, b = encode_both(TINY, tmp_path / "int8")
    assert (a * b).sum(axis=1).min() > 0.99  # cosine of the unit features


def test_encoders_beside_the_float32_ones(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(TINY, model)
    before = {p.name: p.read_bytes() for p in model.iterdir() if p.name != "manifest.json"}
    assert int8.convert_dir(model, None) == ["image_encoder.int8.onnx", "text_encoder.int8.onnx"]
    assert fp16.convert_dir(model, None) == ["image_encoder.fp16.onnx", "text_encoder.fp16.onnx"]
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["version"] == 3
    assert manifest["graphs"]["int8"] == {"imageEncoder": "image_encoder.int8.onnx", "textEncoder": "text_encoder.int8.onnx"}
    assert manifest["graphs"]["float16"] == {"imageEncoder": "image_encoder.fp16.onnx", "textEncoder": "text_encoder.fp16.onnx"}
    assert manifest["graphs"]["imageEncoder"] == "image_encoder.onnx" and manifest["name"] == "tiny-random"
    assert manifest["source"]["int8"]["graphs"] == ["image_encoder.int8.onnx", "text_encoder.int8.onnx"]
    # The float32 files are untouched; four new graphs beside them.
    assert {p.name: p.read_bytes() for p in model.iterdir() if p.name in before} == before
    assert len(list(model.iterdir())) == len(before) + 1 + 4
    ops = {n.op_type for n in onnx.load(str(model / "image_encoder.int8.onnx")).graph.node}
    assert "MatMulInteger" in ops


def elf_with_fatbins(fatbins: list) -> bytes:
    """A minimal ELF64 file: a .nv_fatbin section holding `fatbins`, each a list of
    (kind, arch, payload) entries, and the section-name table."""
    section = b""
    for entries in fatbins:
        body = b""
        for kind, arch, payload in entries:
            header = struct.pack("<HHIQ", kind, 0x101, 64, len(payload)) + bytes(12) + struct.pack("<I", arch)
            body += header + bytes(64 - len(header)) + payload
        section += struct.pack("<IHHQ", FATBIN_MAGIC, 1, 16, len(body)) + body
    names = b"\0.nv_fatbin\0.shstrtab\0"
    fatbin_at = 64
    names_at = fatbin_at + len(section)
    headers_at = names_at + len(names)
    elf = bytearray(b"\x7fELF" + bytes(60))
    struct.pack_into("<Q", elf, 0x28, headers_at)
    struct.pack_into("<HHH", elf, 0x3A, 64, 3, 2)
    elf += section + names
    sections = [(0, 0, 0, 0), (1, 1, fatbin_at, len(section)), (11, 3, names_at, len(names))]
    for name, kind, offset, size in sections:
        elf += struct.pack("<IIQQQQ", name, kind, 0, 0, offset, size) + bytes(24)
    return bytes(elf)


def test_cuda_fatbin_keeps_one_architecture(tmp_path):
    sm80, sm90, ptx90, only80 = b"\x80" * 32, b"\x90" * 48, b"\x55" * 16, b"\x81" * 24
    original = elf_with_fatbins([[(2, 80, sm80), (2, 90, sm90), (1, 90, ptx90)], [(2, 80, only80)]])
    (tmp_path / "lib.so").write_bytes(original)
    counts = keep_architecture(tmp_path / "lib.so", tmp_path / "out.so", 90)
    assert counts == {"fatbins": 2, "keptBytes": 48, "zeroedBytes": 32 + 16 + 24}
    out = (tmp_path / "out.so").read_bytes()
    assert len(out) == len(original)
    assert sm90 in out and sm80 not in out and ptx90 not in out and only80 not in out
    # every header is where it was: only payload bytes changed
    changed = [i for i, (a, b) in enumerate(zip(original, out)) if a != b]
    assert len(changed) == 32 + 16 + 24
    with pytest.raises(ValueError, match="no machine code for sm_100"):
        keep_architecture(tmp_path / "lib.so", tmp_path / "none.so", 100)
    shutil.copyfile(tmp_path / "lib.so", tmp_path / "not-elf")
    (tmp_path / "not-elf").write_bytes(b"MZ" + original[2:])
    with pytest.raises(ValueError, match="not an ELF file"):
        keep_architecture(tmp_path / "not-elf", tmp_path / "x", 90)
