"""Fixtures of the policy-layer tests (tests/policy): tool paths and a SentencePiece model
trained here with sentencepiece's own trainer (Gemma-like: pad 0, eos 1, bos 2, BPE, byte
fallback, identity normalization, no dummy prefix).

ctest runs this folder as its own test (`pytest_policy`, PI0_POLICY_TESTS=1); the whole-suite
`pytest_reference` run (PI0_CLI set, PI0_POLICY_TESTS unset) skips it so it does not run twice."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from pi0_testutil import built  # noqa: E402
sys.path.insert(0, os.path.join(ROOT, "python"))

if os.environ.get("PI0_CLI") and not os.environ.get("PI0_POLICY_TESTS"):
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def tool():
    return built("PI0_POLICY_TOOL", "pi0_policy_tool")


@pytest.fixture(scope="session")
def pi0_cli():
    return built("PI0_CLI", "pi0")


@pytest.fixture(scope="session")
def libpi0():
    if os.environ.get("PI0_POLICY_CTYPES", "1") == "0":
        pytest.skip("ctypes tests are off on sanitized builds (PI0_POLICY_CTYPES=0)")
    return built("PI0_LIBRARY", "libpi0.so")


def run(*args, check=True):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture(scope="session")
def spm_model(tmp_path_factory):
    """A small BPE SentencePiece model (vocab 600 < the tiny model's 1024), trained here."""
    import spm_train
    d = tmp_path_factory.mktemp("spm")
    return spm_train.train(str(d), vocab_size=600)
