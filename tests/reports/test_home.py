"""lung_nodule_mtl.reports is the one home of what the pipeline writes; the old places still answer, with a warning."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "first", ["lung_nodule_mtl.reports.evaluation", "lung_nodule_mtl.engines", "lung_nodule_mtl.reports.crossval"]
)
def test_each_module_imports_first_in_a_fresh_process(first: str) -> None:
    """No import cycle between reports and engines, whichever is imported first."""
    code = f"import {first}, lung_nodule_mtl.reports, lung_nodule_mtl.inference.batch, lung_nodule_mtl.engines.crossval"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_moved_names_still_answer_from_engines_with_a_warning() -> None:
    import lung_nodule_mtl.engines as engines
    from lung_nodule_mtl import reports

    for name in ("NoduleEvaluationWriter", "NodulePredictionWriter", "SplitPredictiond", "head_predictions"):
        with pytest.warns(FutureWarning, match=f"lung_nodule_mtl.reports.{name}"):
            assert getattr(engines, name) is getattr(reports, name)
    with pytest.raises(AttributeError):
        _ = engines.NoSuchThing
