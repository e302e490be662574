"""Fixtures of the policy-server tests (tests/server): the server binaries, a server process
that is started on 127.0.0.1 with a free port and stopped with SIGTERM (its exit code checked:
0, and no LeakSanitizer report on the ASan build), and the real openpi-client from PyPI.

ctest runs this folder as its own test (`pytest_server`, PI0_SERVER_TESTS=1); the whole-suite
`pytest_reference` run (PI0_CLI set, PI0_SERVER_TESTS unset) skips it so it does not run twice.
Network: loopback only; every loop is bounded."""
import importlib
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from pi0_testutil import built  # noqa: E402

if os.environ.get("PI0_CLI") and not os.environ.get("PI0_SERVER_TESTS"):
    collect_ignore_glob = ["test_*.py"]

SANITIZED = os.environ.get("PI0_SERVER_SANITIZED") == "1"
HOST = "127.0.0.1"


def report(line):
    """Print a result line and append it to $PI0_SERVER_REPORT (ctest hides passing tests' output;
    CI prints this file)."""
    print(f"\n{line}")
    path = os.environ.get("PI0_SERVER_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def pytest_configure(config):
    # openpi-client connects without a context manager, which websockets >= 14 warns about
    config.addinivalue_line("filterwarnings", "ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")


@pytest.fixture(scope="session")
def fake_bin():
    return built("PI0_SERVER_FAKE", "pi0_server_fake")


@pytest.fixture(scope="session")
def pi0_cli():
    path = built("PI0_CLI", "pi0")
    r = subprocess.run([path, "serve", "--help"], capture_output=True, text=True)
    if "pi0 serve" not in r.stderr:
        pytest.skip("this pi0 CLI has no `serve` command yet (tools/pi0.c dispatch)")
    return path


@pytest.fixture(scope="session")
def policy_tool():
    return built("PI0_POLICY_TOOL", "pi0_policy_tool")


class Server:
    """A server process on 127.0.0.1 and a free port (--port 0; the port is read from its first
    stdout line). stderr goes to a log file."""

    def __init__(self, args, startup_timeout=180):
        self.log_path = tempfile.mktemp(prefix="pi0_server_", suffix=".log")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE, stderr=self._log, text=True)
        deadline = time.monotonic() + startup_timeout
        line = ""
        while time.monotonic() < deadline and self.proc.poll() is None:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if r:
                line = self.proc.stdout.readline()
                break
        m = re.search(r"listening on ws://([0-9.]+):(\d+)", line)
        if not m:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"server did not start: {line!r}\n{self.log()}")
        self.host, self.port = m.group(1), int(m.group(2))
        assert self.host == HOST
        self.uri = f"ws://{HOST}:{self.port}"

    def log(self):
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path) as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self, sig=signal.SIGTERM, timeout=90):
        """Signal the server and wait; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"server did not stop within {timeout} s:\n{self.log()}")
        self._log.close()
        return self.proc.returncode

    def stop_ok(self):
        rc = self.stop()
        log = self.log()
        assert rc == 0, f"server exited with {rc}:\n{log[-8000:]}"
        assert "LeakSanitizer" not in log and "AddressSanitizer" not in log and "runtime error" not in log, log[-8000:]
        return log


@pytest.fixture
def start_server():
    """start_server(args) -> Server; every server still running at the end is stopped and must
    exit 0 without sanitizer reports."""
    servers = []

    def start(args, **kw):
        s = Server(args, **kw)
        servers.append(s)
        return s

    yield start
    for s in servers:
        if s.alive():
            s.stop_ok()


def openpi_client():
    """The openpi-client package from PyPI. It pins numpy<2, which the rest of the tests do not
    want, so tools/deps installs it with --no-deps; if it is missing here it is installed that way
    into PI0_SERVER_PYDEPS (a build folder)."""
    try:
        return importlib.import_module("openpi_client.websocket_client_policy")
    except ImportError:
        pass
    target = os.environ.get("PI0_SERVER_PYDEPS") or os.path.join(ROOT, "build", "server_pydeps")
    if target not in sys.path:
        sys.path.insert(0, target)
    try:
        return importlib.import_module("openpi_client.websocket_client_policy")
    except ImportError:
        pass
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, "openpi-client"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"openpi-client is not installed and pip could not install it:\n{r.stderr[-2000:]}")
    importlib.invalidate_caches()
    return importlib.import_module("openpi_client.websocket_client_policy")


@pytest.fixture(scope="session")
def openpi():
    return openpi_client()


@pytest.fixture(scope="session")
def openpi_msgpack(openpi):
    return importlib.import_module("openpi_client.msgpack_numpy")
