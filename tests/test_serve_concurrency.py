"""Concurrent clients against a real `clapdex serve` process: 8 client processes send text,
concept-only, steered and vector (hybrid) searches at once, while another process adds files to
the index. Every answer must be exactly what the Python API answers for the index before or after
that write (nothing mixed from two generations), and once the write is done, after it.

The index is built with the TEST DOUBLE encoder (tests/doubles.py, not CLAP); the server gets it
through the encoder seam (CLAPDEX_ENCODER)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

import clapdex
from tests.search_fixtures import build_index, write_corpus
from tests.serve_fixtures import free_port

SRC = str(Path(__file__).resolve().parent.parent / "src")
ROOT = str(Path(__file__).resolve().parent.parent)
CLIENTS = 8
VECTOR_SEED = 5

# (GET parameters) of each query; "vector" stands for a POST of a fixed random vector.
QUERIES = [
    {"text": "a 500 hz tone", "k": 5},
    {"text": "a 1500 hz tone", "k": 5, "mode": "dense"},
    {"concept": "a 500 hz tone", "k": 5},
    {"concept": ["a 2000 hz tone", "-a 250 hz tone"], "k": 5},
    {"text": "a 750 hz tone", "concept": "a 1500 hz tone", "k": 5},
    {"vector": True, "k": 5},
]

# A client process: every query in shuffled rounds, one JSON line per answer ("round": its
# number, -1 for the last one), until the file `stop` exists; then one last round.
CLIENT = r"""
import json, os, random, sys, urllib.parse, urllib.request
base, queries, vector, stop, seed = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4], int(sys.argv[5])
random.seed(seed)
r, last = 0, False
while not last:
    last = os.path.exists(stop)
    r += 1
    order = list(range(len(queries)))
    random.shuffle(order)
    for i in order:
        q = dict(queries[i])
        if q.pop("vector", None):
            body = json.dumps({"vector": vector, **q}).encode()
            request = urllib.request.Request(base + "/api/search", data=body,
                                             headers={"Content-Type": "application/json"})
        else:
            request = base + "/api/search?" + urllib.parse.urlencode(q, doseq=True)
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.load(response)
        print(json.dumps({"round": -1 if last else r, "query": i,
                          "results": [[h["path"], h["score"]] for h in answer["results"]]}), flush=True)
"""


def expected_answers(root, encoder, vector) -> list:
    """Each query's (path, score) list as the Python API answers it now."""
    answers = []
    with clapdex.open_index(root, encoder=encoder) as index:
        for query in QUERIES:
            options = dict(query)
            concepts = options.pop("concept", [])
            options["concepts"] = [concepts] if isinstance(concepts, str) else concepts
            if options.pop("vector", None):
                options["vector"] = np.asarray(vector, dtype=np.float32)
            results = index.search(**options).results
            answers.append([[hit.path, hit.score] for hit in results])
    return answers


def same(answer, expected) -> bool:
    return (len(answer) == len(expected)
            and all(a[0] == e[0] and abs(a[1] - e[1]) < 1e-6 for a, e in zip(answer, expected)))


def test_concurrent_searches_during_a_write_get_one_generations_answers(tmp_path):
    fixture = build_index(tmp_path)
    vector = np.random.default_rng(VECTOR_SEED).standard_normal(fixture.encoder.dimension).tolist()
    before = expected_answers(fixture.root, fixture.encoder, vector)
    # The files the writer adds: tones that rank high for the queries above.
    extra = write_corpus(tmp_path / "extra", fixture.encoder.sample_rate,
                         {f"new_{f}.wav": [((f,), 3.0)] for f in (500, 750, 1500, 2000)})
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + ROOT,
           "CLAPDEX_ENCODER": "tests.doubles:SpectralTestEncoder"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-c", "from clapdex.cli import main; main()", "serve", "--index",
         str(fixture.root), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    clients = []
    try:
        assert base in server.stdout.readline()
        _wait_until_up(base)
        # a first answer per query, alone: the server agrees with the Python API
        for i, query in enumerate(QUERIES):
            assert same(_ask(base, query, vector), before[i]), query

        stop = tmp_path / "stop"
        # stderr to files: communicate() on two pipes reads the descriptors directly and would
        # lose the lines readline() below has already buffered; stdout is read with read() instead
        logs = [tmp_path / f"client-{seed}.err" for seed in range(CLIENTS)]
        for seed, log in enumerate(logs):
            with log.open("w") as err:
                clients.append(subprocess.Popen(
                    [sys.executable, "-c", CLIENT, base, json.dumps(QUERIES), json.dumps(vector),
                     str(stop), str(seed)], stdout=subprocess.PIPE, stderr=err, text=True, env=env))
        first = [client.stdout.readline() for client in clients]  # all of them are searching
        writer = subprocess.run(
            [sys.executable, "-c", "from clapdex.cli import main; main()", "index",
             str(tmp_path / "extra"), "--index", str(fixture.root)],
            capture_output=True, text=True, env=env, timeout=300)
        assert writer.returncode == 0, writer.stderr
        stop.touch()  # each client ends its round, then asks every query once more
        outputs = []
        for client, log in zip(clients, logs):
            out = client.stdout.read()  # through the reader that readline() used: no line lost
            client.wait(timeout=600)
            outputs.append((out, log.read_text()))
        after = expected_answers(fixture.root, fixture.encoder, vector)
        assert any(not same(a, b) for a, b in zip(after, before))  # the write changed answers
        assert {Path(p).name for answer in after for p, _ in answer} & {p.name for p in extra.values()}

        answered, last = 0, 0
        for client, line, (out, err) in zip(clients, first, outputs):
            assert client.returncode == 0, err
            assert same(json.loads(line)["results"], before[json.loads(line)["query"]])
            for line in out.splitlines():
                got = json.loads(line)
                i = got["query"]
                if got["round"] == -1:  # asked after the write: the new generation
                    assert same(got["results"], after[i]), got
                    last += 1
                else:  # asked while it ran: one generation's answer, nothing mixed
                    assert same(got["results"], before[i]) or same(got["results"], after[i]), got
                answered += 1
        assert last == CLIENTS * len(QUERIES) and answered > last
        # once the write is done, every query is answered from the new generation
        for i, query in enumerate(QUERIES):
            assert same(_ask(base, query, vector), after[i]), query
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.communicate()
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert "Traceback" not in err


def _ask(base: str, query: dict, vector) -> list:
    query = dict(query)
    if query.pop("vector", None):
        request = urllib.request.Request(base + "/api/search",
                                         data=json.dumps({"vector": vector, **query}).encode(),
                                         headers={"Content-Type": "application/json"})
    else:
        request = base + "/api/search?" + urllib.parse.urlencode(query, doseq=True)
    with urllib.request.urlopen(request, timeout=120) as response:
        return [[hit["path"], hit["score"]] for hit in json.load(response)["results"]]


def _wait_until_up(base: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(base + "/api/status", timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
