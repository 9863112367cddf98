"""The package's layers point one way: app -> engines -> models -> runtime (docs/architecture.md).

Every import in safecut/ (module level and inside functions, relative ones resolved) is read from the source, so
a lazy import that runs only on a GPU or in one code path is checked too; one test also imports the engines for
real and looks at sys.modules.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "safecut"
LAYERS = ["app", "engines", "models", "runtime"]   # each may import only the layers after it
SHARED = {"safecut", "safecut.errors", "safecut.contract", "safecut.userdirs", "safecut.imaging"}
COMFYUI_MODULES = {"comfy", "comfy_execution", "comfy_extras", "comfy_api", "folder_paths", "server", "execution",
                   "nodes", "latent_preview", "node_helpers", "app"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of everything ``path`` imports (``from . import x`` counts as package.x)."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names)
    return out


def _layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "safecut" and parts[1] in LAYERS else None


SOURCES = sorted(PKG.rglob("*.py"))


def test_layers_exist_with_a_docstring_each():
    for layer in LAYERS:
        init = PKG / layer / "__init__.py"
        assert init.is_file(), f"safecut/{layer}/ is not a package"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and "import" in doc.lower(), f"safecut/{layer}/__init__.py must say what lives there and what it may import"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down_the_layers(path):
    own = _layer(_module_name(path))
    allowed = set(LAYERS[LAYERS.index(own) + 1:]) if own else {"runtime"}  # imaging/testkit/top: runtime helpers
    if own is None and _module_name(path).startswith(("safecut.testkit", "safecut.__main__")):
        allowed = set(LAYERS)   # test builders and the entry point sit beside the layers, not under them
    bad = sorted(n for n in imports_of(path) if _layer(n) and _layer(n) != own and _layer(n) not in allowed)
    assert not bad, f"{path.relative_to(ROOT)} ({own or 'shared'}) imports {bad}: layers run app -> engines -> " \
                    "models -> runtime"


def test_runtime_imports_nothing_above_it():
    for path in (PKG / "runtime").rglob("*.py"):
        above = sorted(n for n in imports_of(path) if _layer(n) in ("app", "engines", "models"))
        assert not above, f"{path.relative_to(ROOT)} imports {above}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_in_safecut_imports_comfyui(path):
    found = sorted(n for n in imports_of(path) if n.split(".")[0] in COMFYUI_MODULES)
    assert not found, f"{path.relative_to(ROOT)} imports ComfyUI modules {found}: only nodes/ may"


def test_models_hashing_breaks_the_old_circle():
    """modelfiles and modellock both hash through models.hashing; neither imports the other for it."""
    assert "safecut.models.modelfiles" not in imports_of(PKG / "models" / "modellock.py")
    assert "safecut.models.hashing.sha256_file" in imports_of(PKG / "models" / "modellock.py")
    assert "safecut.models.hashing.sha256_file" in imports_of(PKG / "models" / "modelfiles.py")


def test_importing_the_engines_loads_no_app_module():
    code = ("import sys, safecut.engines.ben2, safecut.engines.florence, safecut.engines.nudenet, "
            "safecut.engines.guard, safecut.engines.gate, safecut.engines.ben2_quantize; "
            "print(sorted(m for m in sys.modules if m.startswith('safecut.app')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_the_shared_top_level_is_small():
    """Only the few modules every layer shares live beside the layers."""
    top = sorted(p.stem for p in PKG.glob("*.py"))
    assert top == ["__init__", "__main__", "contract", "errors", "userdirs"], top
