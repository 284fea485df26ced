"""Boolean knobs from the bundle's command line (Python Fire gives "false" as a string)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from lung_nodule_mtl.engines import AutocastInferer
from lung_nodule_mtl.engines.checkpoint import TrainingCheckpoint
from lung_nodule_mtl.utils import as_bool


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("false", False), ("FALSE", False), (" True ", True), ("off", False),
     ("yes", True), (0, False), (1, True), ("0", False)],
)  # fmt: skip
def test_as_bool(value, expected) -> None:
    assert as_bool(value, "x") is expected


def test_as_bool_none_and_errors() -> None:
    assert as_bool(None, "amp", allow_none=True) is None
    assert as_bool("null", "amp", allow_none=True) is None
    for bad in ("ture", 2, None, 0.5, "null"):
        with pytest.raises(ValueError, match="resume must be true or false, got"):
            as_bool(bad, "resume")


def test_string_false_switches_knobs_off(tmp_path) -> None:
    assert AutocastInferer(enabled="false").enabled is False
    assert AutocastInferer(enabled="true").enabled is True
    assert TrainingCheckpoint(tmp_path, {}, resume="false").resume is False
    with pytest.raises(ValueError, match="cpu_amp"):
        AutocastInferer(enabled="maybe")


def test_fire_gives_strings_for_lowercase_booleans() -> None:
    """Why as_bool exists: the bundle command line (Fire) keeps ``false`` as the truthy string "false"."""
    code = textwrap.dedent(
        """
        import fire
        def f(**kw):
            print(repr(kw["a"]), repr(kw["b"]))
        fire.Fire(f)
        """
    )
    done = subprocess.run([sys.executable, "-c", code, "--a", "false", "--b", "False"], capture_output=True, text=True)
    assert done.stdout.split() == ["'false'", "False"], done.stdout + done.stderr
