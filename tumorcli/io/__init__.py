"""Reading and writing NIfTI and DICOM; every write is atomic (temp file, then rename)."""
