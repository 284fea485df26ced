"""Real nodule growth pairs: a user's longitudinal CT scans → aligned baseline / follow-up crops and a growth datalist.

The work is in :mod:`lung_nodule_mtl.data.growth_pairs.convert`.
"""

from lung_nodule_mtl.data.growth_pairs.convert import (
    CENTRE_SEARCH_MM,
    DEFAULT_CROP_MM,
    DEFAULT_SPACING_MM,
    INTERVAL_COLUMNS,
    OPTIONAL_COLUMNS,
    PAIRS_COLUMNS,
    SOURCE,
    SUMMARY_COLUMNS,
    PairRowError,
    PairSpec,
    RegistrationSettings,
    prepare_growth_pairs,
    read_pairs_csv,
)

__all__ = [
    "CENTRE_SEARCH_MM",
    "DEFAULT_CROP_MM",
    "DEFAULT_SPACING_MM",
    "INTERVAL_COLUMNS",
    "OPTIONAL_COLUMNS",
    "PAIRS_COLUMNS",
    "SOURCE",
    "SUMMARY_COLUMNS",
    "PairRowError",
    "PairSpec",
    "RegistrationSettings",
    "prepare_growth_pairs",
    "read_pairs_csv",
]
