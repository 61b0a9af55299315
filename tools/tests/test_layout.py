"""The package's layout: constants.py stays light, export/ never imports reference/ or recipe/, reference/
never imports recipe/ (so the parity fixtures do not depend on the training code), and entry points
report library errors as one line and exit status 1."""
import subprocess
import sys

from ovseg_tools.sources import ROOT, sources

PACKAGE = ROOT / "ovseg_tools"


def modules(role: str) -> list[str]:
    return [f"ovseg_tools.{role}.{p.stem}" for p in sorted((PACKAGE / role).glob("*.py"))]


def test_constants_import_nothing_heavy():
    code = "import sys, ovseg_tools.constants; print(sorted({'torch', 'numpy', 'PIL'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"


def test_dependency_directions():
    for role, forbidden in (("export", ("reference", "recipe")), ("reference", ("recipe",))):
        for module in modules(role):
            bad = [f for f in sources(module) if f.relative_to(PACKAGE).parts[0] in forbidden]
            assert not bad, f"{module} imports {bad}"


def test_sources_follow_imports_inside_functions():
    files = {str(p.relative_to(PACKAGE)) for p in sources("ovseg_tools.recipe.bpe")}
    assert {"recipe/bpe.py", "recipe/world.py", "reference/tokenizer_corpus.py", "constants.py", "cli.py",
            "__init__.py", "recipe/__init__.py", "reference/__init__.py"} <= files
    assert "recipe/train_clip.py" not in files


def test_entry_point_reports_a_library_error(tmp_path):
    bad = tmp_path / "not-a-checkpoint.pt"
    import torch

    torch.save([1, 2, 3], bad)
    out = subprocess.run([sys.executable, "-m", "ovseg_tools.export", "--checkpoint", str(bad), "--out", str(tmp_path / "m")],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    assert out.stderr.startswith("error: ") and "not a state dict or checkpoint" in out.stderr
    assert "Traceback" not in out.stderr
