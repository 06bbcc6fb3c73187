"""Finding the external tools some tests need; a missing one skips, or fails under REQUIRE_TEST_TOOLS=1 (CI)."""

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).parents[1]


def require(name: str, *, hint: str) -> str:
    """The path of tool ``name`` (from ``.tools/bin`` or PATH), or skip/fail the test saying how to get it."""
    local = REPO / ".tools" / "bin" / name
    found = str(local) if local.exists() else shutil.which(name)
    if found:
        return found
    return missing(f"{name} is not installed: {hint}")


def missing(message: str) -> NoReturn:
    """Skip the test for want of a prerequisite, or fail it under ``REQUIRE_TEST_TOOLS=1`` (CI)."""
    if os.environ.get("REQUIRE_TEST_TOOLS") == "1":
        pytest.fail(message)
    pytest.skip(message)
