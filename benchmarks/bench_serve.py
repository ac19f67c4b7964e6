"""What the HTTP layer of `clapdex serve` costs, against the in-process Python API in the same run.

    .venv/bin/python benchmarks/bench_serve.py [--segments 100000] [--concepts 2000] [--queries 100]

(1) Builds the synthetic index of benchmarks/bench_search.py (random atoms and sparse weights,
    d = 1024; no model involved), or reuses it with --keep DIR.
(2) Baseline: opens it with clapdex.open_index in this process and, warm, times
    index.search(...) for a concept-only query (two named concepts, one pushed away) and a hybrid
    query with a given query vector, k = 10 (and the same plus the JSON encoding the server does).
(3) Starts `clapdex serve` on that index in another process (real uvicorn, loopback) and times
    the same queries as HTTP requests, keep-alive connections, with 1 and with 8 concurrent
    clients (threads here, each with its own connection); counts errors. 8 clients again, against
    this checkout's web app as it is and as it was before issue 16.6 (baseline: every index call
    under one lock, the Index wrapped by OneAtATime below), same run: latency, throughput, ratio.
(4) A warm text query through the server with the random-weights msclap model (tests/
    clap_fixtures.py: real msclap code, random weights) on a small index built by `clapdex index`,
    against the CLI's cold start for the same query (a new process: imports, open, model, query).
Targets (issue 10): HTTP adds <= 5 ms at p50; 8 concurrent clients without errors.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

from _common import (REPO, environment_for, percentiles, random_clap_index, synthetic_arguments,
                     synthetic_index)
from clapdex import open_index
from clapdex.jsonable import dumps
from clapdex.storage.database import IndexStore
from tests.serve_fixtures import free_port

CLI = [sys.executable, "-c", "from clapdex.cli import main; main()"]
ENV = environment_for(REPO / "src")
# The web app over an index, in its own process; "locked": every index call under one lock, as the
# web app did before issue 16.6.
APP = r"""
import sys, threading, uvicorn, clapdex
from clapdex.server import create_app
root, port, locked = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "locked"

class OneAtATime:
    def __init__(self, index):
        self._index, self._lock = index, threading.Lock()
    def __getattr__(self, name):
        attr = getattr(self._index, name)
        if not callable(attr):
            return attr
        def call(*args, **kwargs):
            with self._lock:
                return attr(*args, **kwargs)
        return call

index = clapdex.open_index(root)
app = create_app(OneAtATime(index) if locked else index)
print(f"http://127.0.0.1:{port}/", flush=True)
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
"""


def make_queries(root: Path, n: int, seed: int = 1):
    """Query vectors near stored segments (plus noise), and concept pairs for concept-only queries."""
    rng = np.random.default_rng(seed)
    with IndexStore.open(root) as store:
        ids = store.segment_ids()
        _, embeddings = store.segment_embeddings(np.sort(rng.choice(ids, n, replace=False)))
        names = store.concept_names()
    vectors = embeddings.astype(np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors += 0.5 * rng.standard_normal(vectors.shape) / np.sqrt(vectors.shape[1])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    pairs = rng.choice(len(names), (n, 2), replace=len(names) < 2 * n)
    concepts = [[names[a], f"-{names[b]}:0.5"] for a, b in pairs]
    return vectors, concepts


def bench_in_process(root: Path, vectors, concepts) -> dict:
    stats = {}
    with open_index(root) as index:
        index.search(vector=vectors[0], mode="hybrid")  # warm: loads the search state
        index.search(concepts=concepts[0])
        for label, call in (("concept-only", lambda i: index.search(concepts=concepts[i], k=10)),
                            ("hybrid", lambda i: index.search(vector=vectors[i], mode="hybrid",
                                                              k=10))):
            for encode in (False, True):
                times = []
                for i in range(len(vectors)):
                    t = time.perf_counter()
                    result = call(i)
                    if encode:
                        dumps(result)  # what the server sends
                    times.append(time.perf_counter() - t)
                stats[(label, encode)] = percentiles(times)
    return stats


class Server:
    """`clapdex serve` in its own process (or APP, `app` "locked" or "concurrent")."""

    def __init__(self, index: Path, env: dict | None = None, app: str | None = None):
        self.port = free_port()
        command = (CLI + ["serve", "--index", str(index), "--port", str(self.port)] if app is None
                   else [sys.executable, "-c", APP, str(index), str(self.port), app])
        self.process = subprocess.Popen(command, env=env or ENV, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if "http://" not in line:
            raise SystemExit(f"clapdex serve did not start: {line}{self.process.stderr.read()}")
        deadline = time.monotonic() + 60
        while True:
            try:
                self.request("GET", "/api/status")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def request(self, method, path, body=None, connection=None):
        conn = connection or self.connection()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        if connection is None:
            conn.close()
        return response.status, data

    def stop(self):
        self.process.send_signal(2)  # Ctrl-C
        self.process.communicate(timeout=60)


def http_requests(vectors, concepts):
    """(label, method, path, body) per query, for both query kinds."""
    out = {"concept-only": [], "hybrid": []}
    for i in range(len(vectors)):
        query = urllib.parse.urlencode([("concept", c) for c in concepts[i]] + [("k", 10)])
        out["concept-only"].append(("GET", f"/api/search?{query}", None))
        body = json.dumps({"vector": vectors[i].tolist(), "mode": "hybrid", "k": 10})
        out["hybrid"].append(("POST", "/api/search", body))
    return out


def bench_http(server: Server, requests: list, clients: int
               ) -> tuple[tuple[float, float], int, int, float]:
    """Latency percentiles, requests answered, errors and requests per second, with `clients`
    concurrent clients that each send every request once (keep-alive connection per client)."""
    times, errors = [], []
    lock = threading.Lock()

    def client(offset: int):
        conn = server.connection()
        mine, bad = [], 0
        for j in range(len(requests)):
            method, path, body = requests[(j + offset) % len(requests)]
            t = time.perf_counter()
            try:
                status, _ = server.request(method, path, body, connection=conn)
                bad += status != 200
            except (OSError, http.client.HTTPException):
                bad += 1
                conn.close()
                conn = server.connection()
            mine.append(time.perf_counter() - t)
        conn.close()
        with lock:
            times.extend(mine)
            errors.append(bad)

    threads = [threading.Thread(target=client, args=(c * 7,)) for c in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return percentiles(times), len(times), sum(errors), len(times) / (time.perf_counter() - started)


def bench_synthetic(args, root: Path) -> None:
    vectors, concepts = make_queries(root, args.queries)
    base = bench_in_process(root, vectors, concepts)
    requests = http_requests(vectors, concepts)
    rows, eight = [], {}
    for name, app in (("serve", None), ("baseline", "locked"), ("this", "concurrent")):
        server = Server(root, app=app)
        try:
            for kind in requests.values():  # warm the server's search state
                server.request(*kind[0])
            if name == "serve":
                # The floor on this machine: a round trip that does no index work (a JSON 404).
                (floor50, floor95), _, _, _ = bench_http(
                    server, [("GET", "/api/no-such-route", None)] * 100, 1)
            for label in ("concept-only", "hybrid"):
                for clients in ((1, 8) if name == "serve" else (8,)):
                    (p50, p95), n, errors, rate = bench_http(server, requests[label], clients)
                    if name == "serve":
                        rows.append((label, clients, p50, p95, n, errors))
                    else:
                        eight[(name, label)] = (p50, p95, rate, n, errors)
        finally:
            server.stop()
    print(f"\n  {'query':14s} {'where':28s} {'p50 ms':>8s} {'p95 ms':>8s} {'HTTP adds (p50)':>16s}")
    for label in ("concept-only", "hybrid"):
        api50, api95 = base[(label, False)]
        json50, json95 = base[(label, True)]
        print(f"  {label:14s} {'in-process API (baseline)':28s} {api50:8.2f} {api95:8.2f} {'':>16s}")
        print(f"  {label:14s} {'in-process API + JSON':28s} {json50:8.2f} {json95:8.2f} "
              f"{json50 - api50:+14.2f} ms")
        for name, clients, p50, p95, n, errors in rows:
            if name == label:
                where = f"HTTP, {clients} client{'s' if clients > 1 else ''}"
                print(f"  {label:14s} {where:28s} {p50:8.2f} {p95:8.2f} {p50 - api50:+14.2f} ms"
                      f"   ({n} requests, {errors} errors)")
    print(f"  {'(floor)':14s} {'HTTP round trip, no index work':28s} {floor50:8.2f} {floor95:8.2f}")
    print("\n  8 concurrent clients, same run: the web app as it is (this) and with every index call"
          " under one lock (baseline, as before issue 16.6)")
    print(f"  {'query':14s} {'server':12s} {'p50 ms':>8s} {'p95 ms':>8s} {'req/s':>8s}"
          f" {'p50 ratio':>10s} {'req/s ratio':>12s}")
    for label in ("concept-only", "hybrid"):
        b50, b95, brate, bn, berr = eight[("baseline", label)]
        t50, t95, trate, tn, terr = eight[("this", label)]
        print(f"  {label:14s} {'baseline':12s} {b50:8.2f} {b95:8.2f} {brate:8.1f} {'1.00':>10s}"
              f" {'1.00':>12s}   ({bn} requests, {berr} errors)")
        print(f"  {label:14s} {'this':12s} {t50:8.2f} {t95:8.2f} {trate:8.1f} {b50 / t50:10.2f}"
              f" {trate / brate:12.2f}   ({tn} requests, {terr} errors)")
    print("  (p50 ratio: baseline p50 / this p50; req/s ratio: this / baseline)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"  machine: {os.cpu_count()} CPUs, load average {load:.1f} during the run")


def bench_text(workdir: Path, n: int = 20) -> None:
    """A warm text query through the server vs the CLI's cold start, random-weights msclap."""
    index, env = random_clap_index(workdir, CLI, ENV)
    cold = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run(CLI + ["search", "a dog barking", "--index", str(index)], env=env,
                       check=True, capture_output=True)
        cold.append(time.perf_counter() - t)
    server = Server(index, env)
    try:
        t = time.perf_counter()
        status, body = server.request("GET", "/api/search?text=a+dog+barking")
        first = time.perf_counter() - t
        if status != 200:
            raise SystemExit(f"text query failed: {body[:300]}")
        texts = [f"a dog barking number {i}" for i in range(n)]  # distinct texts: no caching
        times = []
        conn = server.connection()
        for text in texts:
            t = time.perf_counter()
            status, _ = server.request("GET", "/api/search?" + urllib.parse.urlencode({"text": text}),
                                       connection=conn)
            times.append(time.perf_counter() - t)
            assert status == 200
        conn.close()
    finally:
        server.stop()
    p50, p95 = percentiles(times)
    print(f"\n  text query, random-weights msclap (CPU), small index built by `clapdex index`:")
    print(f"  {'CLI cold start (baseline), median of 3':44s} {np.median(cold) * 1e3:9.0f} ms")
    print(f"  {'server, first text query (loads the model)':44s} {first * 1e3:9.0f} ms")
    print(f"  {'server, warm text query p50 / p95':44s} {p50:9.1f} / {p95:.1f} ms"
          f"   ({np.median(cold) * 1e3 / p50:.0f}x faster than the cold start)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    synthetic_arguments(parser)
    parser.add_argument("--skip-text", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        tmp = Path(tmp)
        index = synthetic_index(args, tmp)
        bench_synthetic(args, index)
        if not args.skip_text:
            bench_text(tmp)


if __name__ == "__main__":
    main()
