"""Readers and writers per modality (OME-Zarr, Zarr, TIFF, FITS, CSV, C3D) behind ``open_dataset``.

=====================  =============================================  ====================
modality               formats                                        module
=====================  =============================================  ====================
microscopy             OME-Zarr (NGFF 0.4/0.5), Zarr v3 (sharded),    ``microscopy``
                       TIFF stacks (-> OME-Zarr)
light-curve            Kepler/TESS FITS, CSV, ragged Zarr archive     ``lightcurves``
biomechanics           C3D, Zarr                                      ``biomechanics``
=====================  =============================================  ====================
"""

from pipelines.io.biomechanics import read_c3d, read_motion_zarr, write_c3d, write_motion_zarr
from pipelines.io.core import (
    CorruptFileError,
    Dataset,
    DatasetError,
    UnknownFormatError,
    detect_format,
    file_checksum,
    open_dataset,
)
from pipelines.io.lightcurves import (
    get_lightcurve,
    quality_mask,
    read_csv,
    read_fits,
    read_lightcurve_zarr,
    write_csv,
    write_fits,
    write_lightcurve_zarr,
)
from pipelines.io.microscopy import (
    read_ome_zarr,
    read_tiff,
    read_zarr,
    tiff_to_ome_zarr,
    write_ome_zarr,
    write_zarr,
)

__all__ = [
    "CorruptFileError",
    "Dataset",
    "DatasetError",
    "UnknownFormatError",
    "detect_format",
    "file_checksum",
    "get_lightcurve",
    "open_dataset",
    "quality_mask",
    "read_c3d",
    "read_csv",
    "read_fits",
    "read_lightcurve_zarr",
    "read_motion_zarr",
    "read_ome_zarr",
    "read_tiff",
    "read_zarr",
    "tiff_to_ome_zarr",
    "write_c3d",
    "write_csv",
    "write_fits",
    "write_lightcurve_zarr",
    "write_motion_zarr",
    "write_ome_zarr",
    "write_zarr",
]
