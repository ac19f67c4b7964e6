"""`clapdex serve` as users start it: a real process, real uvicorn, stopped with Ctrl-C (SIGINT).
The index is built with the TEST DOUBLE encoder; only concept queries are asked (no model)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from click.testing import CliRunner

from clapdex.cli import main
from tests.search_fixtures import build_index
from tests.serve_fixtures import free_port

SRC = str(Path(__file__).resolve().parent.parent / "src")


def test_serve_runs_answers_and_stops_on_ctrl_c(tmp_path):
    fixture = build_index(tmp_path)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(
        [sys.executable, "-c", "from clapdex.cli import main; main()", "serve", "--index",
         str(fixture.root), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in first, first + process.stderr.read()
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as r:
                    status = json.load(r)
                break
            except OSError:
                time.sleep(0.1)
        assert status["counts"]["segments"] > 0
        url = f"http://127.0.0.1:{port}/api/search?concept=speech&k=2"
        with urllib.request.urlopen(url, timeout=10) as r:
            assert len(json.load(r)["results"]) == 2
        # Another Host header (DNS rebinding) is refused on a loopback server without a token.
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/status",
                                         headers={"Host": "attacker.example"})
        try:
            urllib.request.urlopen(request, timeout=5)
            raise AssertionError("a foreign Host header was answered")
        except urllib.error.HTTPError as error:
            assert error.code == 421
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err


def test_serve_refuses_a_network_address_without_a_token(tmp_path):
    fixture = build_index(tmp_path)
    result = CliRunner().invoke(main, ["serve", "--index", str(fixture.root), "--host", "0.0.0.0"],
                                env={"CLAPDEX_TOKEN": ""})
    assert result.exit_code == 1
    assert "--token" in result.output and "Traceback" not in result.output


def test_serve_port_in_use_is_one_line(tmp_path):
    import socket

    fixture = build_index(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "--index", str(fixture.root), "--port", str(port)])
    assert result.exit_code == 1
    assert "cannot listen" in result.output and "--port" in result.output


def test_serve_without_an_index_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["serve", "--index", str(tmp_path / "none")])
    assert result.exit_code == 1 and result.output.startswith("error: ")
