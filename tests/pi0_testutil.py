"""Helpers shared by the pytest files of tests/ (imported by name, unlike conftest)."""
import subprocess


def run_cli(cli, *args, check=True):
    r = subprocess.run([cli, *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"pi0 {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stderr}")
    return r
