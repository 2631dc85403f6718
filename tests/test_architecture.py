"""The package's shape: every family answers the whole interface, the facade never branches on a
family, and no lower layer imports the facade.

The facade (``explainer.py``, ``stages.py``, ``capture.py``) is read with :mod:`ast`, not imported,
so a model_type literal or an import added anywhere in it (inside a function too) is found.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hf_vit_rollout
from hf_vit_rollout.errors import UnsupportedModelError
from hf_vit_rollout.families import FAMILIES, Family, family_for, supported_model_types
from hf_vit_rollout.families.tokens import Layout

PACKAGE = Path(hf_vit_rollout.__file__).resolve().parent

#: What the explainer and the stages ask a family (the families package's docstring lists them).
METHODS = (
    "check", "layout", "patch_size", "attention_setup", "held", "forward_context", "call_kwargs", "tile_text",
    "sources", "has_classifier", "is_detector_model", "has_regions", "check_request", "prepare", "forward", "objectives", "results",
)
FLAGS = {"model_types": tuple, "refused": bool, "needs_text": bool, "one_box_per_patch": bool, "is_video": bool, "input_shape": str}

#: The modules that ask the family and must never branch on which one it is.
ASKING = ("explainer.py", "stages.py", "capture.py")
#: The modules of the families package they may import besides the registry: checkpoint loading.
ALLOWED_FAMILY_MODULES = {"loading"}
#: The front doors and the facade, which nothing below them may import.
FACADE = ("explainer", "stages", "pipeline", "cli", "app")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every import in ``path`` (relative ones resolved; ``from x import
    y`` counted as ``x`` and as ``x.y``, since ``y`` may be a module)."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else [])) if node.level else node.module
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _probes_family_or_layout(node) -> bool:
    """Whether ``node`` is ``getattr``/``hasattr`` on a family or a layout (or of an attribute so named)."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")):
        return False
    if not node.args:
        return False
    named = [arg.value for arg in node.args[1:] if isinstance(arg, ast.Constant)]
    return any(word in ast.unparse(node.args[0]) for word in ("family", "layout")) or any(v in ("family", "layout") for v in named)


def test_every_explained_model_type_has_a_family_that_declares_the_whole_interface():
    types = supported_model_types()
    assert {"vit", "deit", "dinov2", "beit", "clip_vision_model", "siglip_vision_model", "ijepa", "vit_msn",
            "dinov3_vit", "swin", "swinv2", "donut-swin", "maskformer-swin"} <= set(types)
    for model_type in types:
        family = FAMILIES[model_type]
        assert isinstance(family, Family), f"{model_type}: {type(family).__name__} is not a Family"
        assert model_type in family.model_types and not family.refused
        for name in METHODS:
            assert callable(getattr(family, name, None)), f"{model_type}: {type(family).__name__} has no {name}()"
        for name, kind in FLAGS.items():
            assert isinstance(getattr(family, name, None), kind), f"{model_type}: {name} is not a {kind.__name__}"
        assert type(family).layout is not Family.layout, f"{model_type}: {type(family).__name__} declares no layout"


def test_refused_and_unknown_model_types_are_refused_with_the_reason():
    class Config:
        model_type = "no-such-model"

    assert family_for(Config()) is None
    refused = [t for t, f in FAMILIES.items() if f.refused]
    assert {"hiera", "timm_wrapper", "resnet", "swin2sr"} <= set(refused)
    for model_type in refused:
        Config.model_type = model_type
        with pytest.raises(UnsupportedModelError, match="not supported"):
            FAMILIES[model_type].check(Config())


def test_every_layout_answers_the_stages_questions():
    """Every layout class of the families (a class that maps token relevance onto patches) is a
    :class:`Layout`; those the stages fold layer by layer (with a ``layer_map``) answer every question
    the stages ask, so the stages never probe them."""
    import importlib
    import inspect

    layouts = []
    for path in sorted((PACKAGE / "families").glob("*.py")):
        module = importlib.import_module(_module_name(path))
        layouts += [c for _, c in inspect.getmembers(module, inspect.isclass)
                    if c.__module__ == module.__name__ and hasattr(c, "patch_relevance")]
    assert len(layouts) >= 8
    for layout in layouts:
        assert issubclass(layout, Layout), f"{layout.__qualname__} is not a Layout"
        if not hasattr(layout, "layer_map"):  # a family with its own pass (DETR) reads its layout itself
            continue
        for name in ("hierarchical", "refused_combines", "method_refusal", "ratio_for", "full_attention", "layer_map",
                     "attention_mismatch", "output_weights", "patch_relevance", "step", "num_steps", "fixed_maps"):
            assert hasattr(layout, name), f"{layout.__qualname__} has no {name}"


@pytest.mark.parametrize("name", ASKING)
def test_the_facade_names_no_model_type_and_imports_no_family_module(name):
    path = PACKAGE / name
    tree = ast.parse(path.read_text(encoding="utf-8"))
    model_types = set(FAMILIES)
    literals = [
        (node.lineno, node.value) for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in model_types
    ]
    assert literals == [], f"{name} names model types {literals}: ask the family instead"
    reads = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == "model_type"]
    assert reads == [], f"{name} reads .model_type at lines {reads}: ask the family instead"
    probes = [node.lineno for node in ast.walk(tree) if _probes_family_or_layout(node)]
    assert probes == [], (
        f"{name} probes a family or a layout with getattr/hasattr at lines {probes}: declare it on Family or Layout"
    )
    specific = {p.stem for p in (PACKAGE / "families").glob("*.py")} - {"__init__"} - ALLOWED_FAMILY_MODULES
    family_imports = sorted(
        (line, module) for line, module in _imports(path)
        if module.split(".")[:2] == ["hf_vit_rollout", "families"] and module.split(".")[2:3] and module.split(".")[2] in specific
    )
    assert family_imports == [], f"{name} imports family-specific modules {sorted(family_imports)}"


def test_no_upward_import_from_families_or_methods_into_the_facade():
    facade = {f"hf_vit_rollout.{name}" for name in FACADE}
    upward = []
    for folder in ("families", "methods"):
        for path in sorted((PACKAGE / folder).rglob("*.py")):
            for line, module in _imports(path):
                if any(module == top or module.startswith(top + ".") for top in facade):
                    upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    assert upward == [], "\n".join(upward)
