"""`tumor info`: versions, compute devices and the models this installation can find."""

from __future__ import annotations

import platform
from importlib import metadata

from tumorcli.cli.common import Json, Quiet, console, finish, start

PACKAGES = ("torch", "monai", "numpy", "nibabel", "SimpleITK", "pydicom", "highdicom",
            "safetensors", "einops", "typer", "rich")


def info(as_json: Json = False, quiet: Quiet = False) -> None:
    """Versions, torch devices (CUDA yes/no) and models found in models/ and $TUMOR_MODELS."""
    start(quiet, as_json)
    import torch

    from tumorcli import __version__
    from tumorcli.io.models import find_models, model_roots

    devices = [{"name": "cpu", "description": f"{platform.processor() or platform.machine()}, "
                f"{torch.get_num_threads()} threads"}]
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        properties = torch.cuda.get_device_properties(index)
        devices.append({"name": f"cuda:{index}", "description":
                        f"{properties.name}, {properties.total_memory / 2**30:.0f} GiB"})
    result = {
        "tumorcli": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "cuda": torch.cuda.is_available(),
        "devices": devices,
        "model_search_path": [f"{origin}: {root}" for origin, root in model_roots()],
        "models": [{"name": m.name, "architecture": m.architecture, "weights_mb": m.weights_mb,
                    "card": m.has_card, "path": str(m.path), "found_in": m.origin}
                   for m in find_models()],
    }
    finish(result, as_json=as_json, quiet=quiet, human=_show)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _show(result: dict) -> None:
    from rich.table import Table

    out = console()
    out.print(f"[bold]tumorcli {result['tumorcli']}[/] on Python {result['python']}, "
              f"{result['platform']}")
    packages = Table("package", "version", title="Packages", title_justify="left")
    for name, version in result["packages"].items():
        packages.add_row(name, version)
    out.print(packages)
    out.print(f"CUDA: {'yes' if result['cuda'] else 'no'}")
    for device in result["devices"]:
        out.print(f"  {device['name']}: {device['description']}")
    out.print("Model search path: " + "; ".join(result["model_search_path"]))
    if not result["models"]:
        out.print("Models: none found (train one with `tumor train`, or set $TUMOR_MODELS)")
        return
    models = Table("model", "architecture", "weights MB", "card", "found in",
                   title="Models", title_justify="left")
    for model in result["models"]:
        models.add_row(model["name"], model["architecture"], f"{model['weights_mb']:.1f}",
                       "yes" if model["card"] else "no", model["found_in"])
    out.print(models)
