"""Segmentation metrics: tumour regions and volumes, overlap, surface distance, lesion-wise."""
