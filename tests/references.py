"""Reference implementations the tests compare dlspec's models against, built with random weights.

PyPI's torchvision wheel is a CUDA build: `import torchvision` fails beside the CPU torch (its compiled
ops do not register), and transformers, which imports torchvision when it is installed, fails with it.
Its model definitions are pure Python, though. `torchvision_module(name)` imports one of them under a
stand-in `torchvision` package whose `__init__` (the compiled ops) never runs; the stand-in stays in
sys.modules, so transformers imports after it as well.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types


def _stand_in() -> None:
    if getattr(sys.modules.get("torchvision"), "__dlspec_stand_in__", False):
        return
    spec = importlib.util.find_spec("torchvision")  # finds the package without importing it
    root = spec.submodule_search_locations[0]
    for name in ("torchvision", "torchvision.models", "torchvision.ops"):
        module = types.ModuleType(name)
        module.__path__ = [root + name[len("torchvision"):].replace(".", "/")]
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        module.__spec__.submodule_search_locations = module.__path__
        module.__dlspec_stand_in__ = True
        sys.modules[name] = module
    # the one name model files import from torchvision.ops itself
    ops = sys.modules["torchvision.ops"]
    ops.StochasticDepth = importlib.import_module("torchvision.ops.stochastic_depth").StochasticDepth


def torchvision_module(name: str):
    """`torchvision.models.<name>` (mobilenetv2, efficientnet, resnet, ...), pure Python."""
    _stand_in()
    return importlib.import_module(f"torchvision.models.{name}")


def transformers():
    """The transformers package, importable whatever torchvision wheel is installed."""
    _stand_in()
    return importlib.import_module("transformers")


def timm():
    """The timm package (it imports torchvision, so the stand-in comes first)."""
    _stand_in()
    return importlib.import_module("timm")
