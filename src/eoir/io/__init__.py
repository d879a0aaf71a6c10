"""Files: images with their geometry, displacement fields, landmarks and atomic outputs.

- :mod:`eoir.io.images`: reading images (NIfTI with nibabel, everything else SimpleITK reads);
- :mod:`eoir.io.fields`: the ITK/ANTs and Learn2Reg field formats, reading fields;
- :mod:`eoir.io.outputs`: :class:`OutputSet`, atomic writing of images and fields;
- :mod:`eoir.io.landmarks`: landmark files;
- :mod:`eoir.io.transforms`: linear transforms (ITK ``.tfm``/``.txt``, ANTs ``.mat``);
- :mod:`eoir.io.datasets`: dataset descriptions (Learn2Reg ``dataset.json``, folders);
- :mod:`eoir.io.gzip_stream`: the multi-threaded ``.gz`` writer behind NIfTI outputs.
"""

from eoir.io.datasets import SPLITS, DatasetSpec, Split, Subject, load_dataset
from eoir.io.fields import FIELD_FORMATS, FieldFormat, check_field_target, read_field
from eoir.io.images import (
    IMAGE_2D_SUFFIXES,
    NIFTI_SUFFIXES,
    ImageLike,
    as_image,
    as_sitk_image,
    check_labels,
    image_frame,
    read_image,
    read_labels,
)
from eoir.io.landmarks import read_landmarks
from eoir.io.outputs import (
    WRITABLE_SUFFIXES,
    OutputSet,
    check_image_target,
    write_field,
    write_image,
)
from eoir.io.transforms import TRANSFORM_SUFFIXES, read_transform

__all__ = [
    "FIELD_FORMATS",
    "IMAGE_2D_SUFFIXES",
    "NIFTI_SUFFIXES",
    "SPLITS",
    "TRANSFORM_SUFFIXES",
    "WRITABLE_SUFFIXES",
    "DatasetSpec",
    "FieldFormat",
    "ImageLike",
    "OutputSet",
    "Split",
    "Subject",
    "as_image",
    "as_sitk_image",
    "check_field_target",
    "check_image_target",
    "check_labels",
    "image_frame",
    "load_dataset",
    "read_field",
    "read_image",
    "read_labels",
    "read_landmarks",
    "read_transform",
    "write_field",
    "write_image",
]
