"""`tumor convert`: DICOM folder → NIfTI, NIfTI → DICOM series, label mask → DICOM SEG."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from tumorcli.cli.common import InputPath, Json, OutputPath, Quiet, console, finish, start


class Target(str, Enum):
    auto = "auto"
    nifti = "nifti"
    dicom = "dicom"
    seg = "seg"


def convert(
    input: InputPath,
    output: OutputPath,
    to: Annotated[Target, typer.Option(
        "--to", help="auto (DICOM folder → NIfTI, NIfTI → NIfTI), nifti, dicom (an MR series "
        "folder) or seg (a DICOM SEG file; needs --reference).")] = Target.auto,
    series: Annotated[Optional[str], typer.Option(
        "--series", help="Which DICOM series when a folder holds several: UID, series number "
        "or description.")] = None,
    reference: Annotated[Optional[Path], typer.Option(
        "--reference", help="DICOM folder: the source series for --to seg; the patient/study "
        "tags to copy for --to dicom.")] = None,
    orient: Annotated[Optional[str], typer.Option(
        "--orient", help="Reorient NIfTI output to these axis codes, e.g. RAS or LPS "
        "(exact flips/permutations, no resampling).")] = None,
    description: Annotated[str, typer.Option(
        "--description", help="SeriesDescription of a written DICOM series.")] = "tumorcli",
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Convert between DICOM and NIfTI.

    Examples:
      tumor convert -i dicom/T1C -o t1c.nii.gz
      tumor convert -i t1c.nii.gz -o t1c_dicom --to dicom
      tumor convert -i seg.nii.gz -o seg.dcm --to seg --reference dicom/T1C
    """
    start(quiet, as_json)
    from tumorcli.errors import BadInput
    from tumorcli.io.volume import is_nifti_path

    if not input.exists():
        raise BadInput(f"{input}: not found", "check the path given to -i/--input")
    target = to
    if target is Target.auto:
        if input.is_dir() or is_nifti_path(output):
            target = Target.nifti
        else:
            raise BadInput(f"{output}: cannot tell which format to write",
                           "name a .nii/.nii.gz output, or pass --to dicom or --to seg")
    if orient is not None and target is not Target.nifti:
        raise BadInput("--orient applies to NIfTI output only", "drop --orient or use --to nifti")
    result = {"input": str(input), "output": str(output), "to": target.value}
    if target is Target.nifti:
        result.update(_to_nifti(input, output, series, orient))
    elif target is Target.dicom:
        result.update(_to_dicom(input, output, reference, series, description))
    else:
        result.update(_to_seg(input, output, reference, series))
    finish(result, as_json=as_json, quiet=quiet, human=_show)


def _to_nifti(input: Path, output: Path, series: str | None, orient: str | None) -> dict:
    from tumorcli.errors import BadInput
    from tumorcli.io.volume import is_nifti_path, load_volume, save_volume

    if not is_nifti_path(output):
        raise BadInput(f"{output}: NIfTI output must end in .nii or .nii.gz",
                       "rename the output, or pass --to dicom / --to seg")
    extra = {}
    if input.is_dir():
        from tumorcli.io.dicom import read_dicom_series

        dicom = read_dicom_series(input, series)
        volume = dicom.volume
        extra["series"] = {"uid": dicom.info.uid, "number": dicom.info.number,
                           "description": dicom.info.description, "files": dicom.info.n_files}
    else:
        volume = load_volume(input)
    if orient is not None:
        volume = volume.reoriented(_axcodes(orient))
    save_volume(volume, output)
    return {**_geometry(volume), **extra}


def _to_dicom(input: Path, output: Path, reference: Path | None, series: str | None,
              description: str) -> dict:
    from tumorcli.io.dicom import write_dicom_series
    from tumorcli.io.volume import load_volume

    volume = load_volume(input)
    reference_datasets = None
    if reference is not None:
        from tumorcli.io.dicom import read_dicom_series

        reference_datasets = read_dicom_series(reference, series).datasets
    files = write_dicom_series(volume, output, reference=reference_datasets,
                               series_description=description)
    return {**_geometry(volume), "files": len(files)}


def _to_seg(input: Path, output: Path, reference: Path | None, series: str | None) -> dict:
    import numpy as np

    from tumorcli.errors import BadInput
    from tumorcli.io.dicom_seg import write_dicom_seg
    from tumorcli.io.volume import load_volume

    if reference is None:
        raise BadInput("--to seg needs --reference: the DICOM folder of the scan the mask was "
                       "drawn on", "add --reference DICOM_DIR")
    mask = load_volume(input)
    values = np.unique(mask.array)
    if not np.all(values == np.round(values)) or values.min() < 0:
        raise BadInput(f"{input}: not a label mask (values must be whole numbers ≥ 0)",
                       "threshold probability maps first")
    write_dicom_seg(mask, reference, output, series=series)
    labels = [int(v) for v in values if v > 0]
    return {**_geometry(mask), "labels": labels}


def _axcodes(orient: str) -> str:
    from tumorcli.errors import BadInput

    codes = orient.strip().upper()
    axis_of = {"L": 0, "R": 0, "A": 1, "P": 1, "S": 2, "I": 2}
    if len(codes) != 3 or sorted(axis_of.get(code, -1) for code in codes) != [0, 1, 2]:
        raise BadInput(f"--orient {orient}: not three axis codes",
                       "use one of L/R, A/P, S/I each, e.g. RAS or LPS")
    return codes


def _geometry(volume) -> dict:
    return {"shape": list(volume.shape), "spacing_mm": [round(s, 4) for s in volume.spacing],
            "orientation": volume.orientation}


def _show(result: dict) -> None:
    shape = "×".join(str(n) for n in result["shape"])
    spacing = "×".join(f"{s:g}" for s in result["spacing_mm"])
    console().print(f"[green]wrote[/] {result['output']} ({result['to']}, {shape} voxels of "
                    f"{spacing} mm, {result['orientation']})")
