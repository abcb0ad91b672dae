"""DICOM pixel values: decoding (with a clear word on missing codecs), rescale in, int16 out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import JPEG2000TransferSyntaxes, JPEGLSTransferSyntaxes, JPEGTransferSyntaxes
from pydicom.valuerep import format_number_as_ds

from tumorcli.errors import BadInput, first_line


def rescaled_voxels(datasets: list[Dataset], paths: list[Path]) -> np.ndarray:
    """(columns, rows, slices) voxels: each slice's pixel_array transposed, then rescaled.

    Integer dtype when every RescaleSlope is 1 and every intercept a whole number, else float32.
    """
    raw = np.stack([_pixels(dataset, path).T for dataset, path in zip(datasets, paths)], axis=-1)
    slopes = np.array([tag_number(dataset, "RescaleSlope", 1.0) for dataset in datasets])
    intercepts = np.array([tag_number(dataset, "RescaleIntercept", 0.0) for dataset in datasets])
    if np.all(slopes == 1) and np.all(intercepts == np.round(intercepts)):
        if np.all(intercepts == 0):
            return raw
        low = int(raw.min()) + int(intercepts.min())
        high = int(raw.max()) + int(intercepts.max())
        dtype = next(t for t in (raw.dtype, np.int16, np.int32, np.int64)
                     if np.iinfo(t).min <= low and high <= np.iinfo(t).max)
        return (raw.astype(np.int64) + intercepts.astype(np.int64)).astype(dtype)
    return (raw.astype(np.float64) * slopes + intercepts).astype(np.float32)


def _pixels(dataset: Dataset, path: Path) -> np.ndarray:
    if "PixelData" not in dataset:
        raise BadInput(f"{path}: has no pixel data", "remove it or export the series again")
    if int(dataset.get("SamplesPerPixel", 1) or 1) != 1:
        raise BadInput(f"{path}: a colour image ({dataset.get('PhotometricInterpretation')}); "
                       "tumorcli reads greyscale series only",
                       "choose the original greyscale series")
    try:
        return dataset.pixel_array
    except Exception as error:  # pydicom raises a different error type per codec
        syntax = dataset.file_meta.get("TransferSyntaxUID")
        if syntax is not None and syntax.is_compressed:
            if "missing dependencies" in str(error):
                raise BadInput(f"{path}: pixel data is compressed as {syntax.name} and no "
                               "installed decoder reads it", _decoder_hint(syntax)) from None
            raise BadInput(f"{path}: compressed pixel data ({syntax.name}) could not be decoded "
                           f"({first_line(error)})", "the file may be damaged; export it again, "
                           "or convert the folder with dcm2niix") from None
        raise BadInput(f"{path}: unreadable pixel data ({first_line(error)})",
                       "the file may be damaged; export the series again") from None


def _decoder_hint(syntax) -> str:
    if syntax in JPEG2000TransferSyntaxes:
        packages = "pylibjpeg pylibjpeg-openjpeg"
    elif syntax in JPEGLSTransferSyntaxes:
        packages = "pyjpegls"
    elif syntax in JPEGTransferSyntaxes:
        packages = "pylibjpeg pylibjpeg-libjpeg"
    else:
        packages = "python-gdcm"
    return (f"install a decoder (pip install {packages}), decompress the files (e.g. gdcmconv "
            "--raw), or convert the folder with dcm2niix")


def tag_number(dataset: Dataset, keyword: str, default):
    value = dataset.get(keyword)
    if value in (None, ""):
        return default
    return float(value[0] if isinstance(value, MultiValue) else value)


def encode_int16(array: np.ndarray, source: str) -> tuple[np.ndarray, float, float]:
    """Stored int16 voxels and the (slope, intercept) that give them back as `array`.

    Exact for integer voxels spanning at most 65536 values (slope 1, a whole-number intercept
    when they do not fit int16); otherwise scaled over the full int16 range, which is lossy
    (error <= half a step of (max - min) / 65534).
    """
    values = array.astype(np.float64) if array.dtype != np.float64 else array
    if not np.all(np.isfinite(values)):
        raise BadInput(f"{source}: contains NaN or infinite voxels, which DICOM cannot store",
                       "replace them (e.g. with 0) before exporting")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if np.array_equal(values, np.round(values)) and high - low <= 65535:
        intercept = 0.0 if -32768 <= low and high <= 32767 else float(low + 32768)
        return (values - intercept).astype(np.int16), 1.0, intercept
    # The DS text of slope/intercept is what readers see, so scale with the rounded values.
    slope = float(format_number_as_ds((high - low) / 65534 or 1.0))
    intercept = float(format_number_as_ds((high + low) / 2))
    stored = np.clip(np.round((values - intercept) / slope), -32768, 32767)
    return stored.astype(np.int16), slope, intercept
