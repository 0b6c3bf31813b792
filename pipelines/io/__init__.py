"""Readers and writers per modality (OME-Zarr, FITS, C3D) behind ``open_dataset``."""

__all__: list[str] = []
