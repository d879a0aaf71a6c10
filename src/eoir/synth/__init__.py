"""Synthetic training images from label maps (:mod:`eoir.synth.generator`)."""

from eoir.synth.generator import (
    EXTRA_CEREBRAL_FROM,
    LEFT_RIGHT,
    NON_BRAIN,
    SynthOptions,
    bias_field,
    brain_labels,
    random_affine,
    random_contrast,
    random_velocity,
    robust_minmax,
    sample_labels,
    synthesise_image,
    thick_slices,
    tissue_groups,
)

__all__ = [
    "EXTRA_CEREBRAL_FROM",
    "LEFT_RIGHT",
    "NON_BRAIN",
    "SynthOptions",
    "bias_field",
    "brain_labels",
    "random_affine",
    "random_contrast",
    "random_velocity",
    "robust_minmax",
    "sample_labels",
    "synthesise_image",
    "thick_slices",
    "tissue_groups",
]
