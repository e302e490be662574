"""Shared pytest fixtures: the C CLI and a fresh seed per run (printed, so a failure can be replayed)."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from pi0_testutil import built  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--seed", type=int, default=None, help="base seed (default: fresh per run)")


@pytest.fixture(scope="session")
def base_seed(request):
    seed = request.config.getoption("--seed")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    print(f"\n[pi0 tests] base seed = {seed} (replay with --seed {seed})")
    return seed


@pytest.fixture(scope="session")
def cli():
    return built("PI0_CLI", "pi0")
