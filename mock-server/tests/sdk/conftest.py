"""Start `mock-arm --tls` as a subprocess for the SDK tests."""

import os
import pathlib
import secrets
import subprocess
import urllib.request
import ssl
import json

import pytest

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE.parent / "fixtures"
REPO = HERE.parents[2]


class Mock:
    def __init__(self, url: str, ca: str, process: subprocess.Popen, admin_token: str):
        self.url = url
        self.ca = ca
        self.process = process
        self.admin_token = admin_token

    def admin(self, path: str, method: str = "GET", body=None):
        context = ssl.create_default_context(cafile=self.ca)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + "/_admin/" + path, data=data, method=method,
                                         headers={"content-type": "application/json",
                                                  "x-mock-admin-token": self.admin_token})
        with urllib.request.urlopen(request, context=context) as response:
            text = response.read()
            return json.loads(text) if text else None


def binary() -> str:
    path = os.environ.get("MOCK_ARM_BIN") or str(REPO / "target" / "debug" / "mock-arm")
    if not os.path.exists(path):
        pytest.fail(f"mock-arm binary not found at {path}; run `cargo build -p mock-server --bin mock-arm`")
    return path


@pytest.fixture
def mock(tmp_path):
    admin_token = secrets.token_hex(16)
    process = subprocess.Popen(
        [binary(), "--port", "0", "--tls", "--seed", str(FIXTURES / "seed.yaml"),
         "--config", str(FIXTURES / "fast.yaml"), "--state", str(tmp_path / "state.json"),
         "--admin-token", admin_token],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        first = process.stdout.readline().strip()
        second = process.stdout.readline().strip()
        assert first.startswith("listening on https://127.0.0.1:"), first
        assert second.startswith("ca certificate: "), second
        yield Mock(first.split(" ", 2)[2], second.split(": ", 1)[1], process, admin_token)
    finally:
        process.kill()
        process.wait(timeout=10)
