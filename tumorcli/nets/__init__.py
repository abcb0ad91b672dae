"""Networks only: no sampling, no file I/O."""
