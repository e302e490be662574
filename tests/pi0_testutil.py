"""Helpers shared by the pytest files of tests/ (imported by name, unlike conftest)."""
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def built(env, name):
    """Path of a build output: $env, else build/<name>; the test is skipped when it is absent."""
    path = os.environ.get(env) or os.path.join(ROOT, "build", name)
    if not os.path.exists(path):
        pytest.skip(f"{name} not built at {path} (set {env})")
    return path


def run_cli(cli, *args, check=True):
    r = subprocess.run([cli, *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"pi0 {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stderr}")
    return r
