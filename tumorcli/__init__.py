"""tumorcli: clinical-style brain-tumour MRI workflows on NIfTI and DICOM, driven by `tumor`."""

__version__ = "0.1.0"
