"""The web app's HTTP JSON API, in-process (Starlette's test client), over a small index built with
the TEST DOUBLE encoder (tests/doubles.py, not CLAP): each endpoint with good and bad input."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import soundfile

from tests.serve_fixtures import AIFF, FAILED, HOSTILE, VANISHED, build_serve_index

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return build_serve_index(tmp_path_factory.mktemp("serve-api"))


@pytest.fixture(scope="module")
def index(fixture):
    import clapdex

    with clapdex.open_index(fixture.root, encoder=fixture.encoder) as index:
        yield index


@pytest.fixture(scope="module")
def client(index):
    from clapdex.server import create_app

    return TestClient(create_app(index))


def file_id(client, fixture, name):
    path = fixture.paths[name] if name != FAILED else fixture.failed_path
    found = client.get("/api/files", params={"limit": 100}).json()["files"]
    return next(f["id"] for f in found if f["path"] == path)


def assert_refused(response, status, *words):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert "Traceback" not in message
    for word in words:
        assert word in message, message
    return response.json()


# ---- search ------------------------------------------------------------------------------------

def test_text_search_returns_the_python_api_results(client, index, fixture):
    got = client.get("/api/search", params={"text": "a 500 hz tone", "k": 3})
    assert got.status_code == 200
    body = got.json()
    assert body["results"][0]["path"] == fixture.paths["tone_500.wav"]
    expected = index.search(text="a 500 hz tone", k=3)
    assert body == json.loads(json.dumps(_jsonable(expected)))
    first = body["results"][0]["explanation"]
    total = sum(t["contribution"] for t in first["contributions"]) + first["baseline"]
    assert total == pytest.approx(body["results"][0]["concept"], abs=1e-6)


def _jsonable(value):
    from clapdex import to_jsonable

    return to_jsonable(value)


def test_concept_search_steering_mode_path_and_paging(client, fixture):
    alone = client.get("/api/search", params={"concept": "a 500 hz tone"}).json()
    assert alone["mode"] == "concept" and alone["query"]["kind"] == "concepts"
    assert {r["path"] for r in alone["results"]} >= {fixture.paths["tone_500.wav"]}
    steered = client.get("/api/search", params={"text": "a 500 hz tone", "k": 2,
                                                "concept": ["a 1500 hz tone"]}).json()
    assert steered["query"]["steering"] == [{"concept": "a 1500 hz tone", "weight": 1.0}]
    assert steered["results"][0]["path"] == fixture.paths["tone_500_1500.wav"]
    dense = client.get("/api/search", params={"text": "a 500 hz tone", "mode": "dense"}).json()
    assert dense["mode"] == "dense" and dense["alpha"] is None
    only_sub = client.get("/api/search", params={"text": "a 3000 hz tone", "path": "*/sub/*"}).json()
    assert [r["path"] for r in only_sub["results"]] == [fixture.paths["sub/tone_3000.wav"]]
    page1 = client.get("/api/search", params={"text": "a 500 hz tone", "k": 2}).json()["results"]
    page2 = client.get("/api/search", params={"text": "a 500 hz tone", "k": 2,
                                              "offset": 2}).json()["results"]
    assert [r["rank"] for r in page2] == [3, 4]
    assert not {r["path"] for r in page1} & {r["path"] for r in page2}


def test_post_search_with_a_query_vector_and_more_like_this(client, index, fixture):
    vector = fixture.encoder.embed_text(["a 2500 hz tone"])[0].tolist()
    body = client.post("/api/search", json={"vector": vector, "k": 2}).json()
    assert body == _jsonable(index.search(vector=np.array(vector), k=2))
    source = file_id(client, fixture, "tone_500_2500.wav")
    similar = client.get("/api/similar", params={"file_id": source, "k": 2}).json()
    assert similar["query"]["audio_indexed"] is True
    assert fixture.paths["tone_500_2500.wav"] not in {r["path"] for r in similar["results"]}
    same = client.post("/api/search", json={"file_id": source, "k": 2}).json()
    assert same["results"] == similar["results"]
    kept = client.get("/api/similar", params={"file_id": source, "k": 2,
                                              "include_self": "true"}).json()
    assert kept["results"][0]["path"] == fixture.paths["tone_500_2500.wav"]
    assert client.post("/api/search", json={"file_id": source, "k": 2, "include_self": True}
                       ).json()["results"] == kept["results"]


def test_search_refusals_are_json_4xx(client):
    assert_refused(client.get("/api/search", params={"text": "   "}), 400, "empty query")
    assert_refused(client.get("/api/search"), 400, "nothing to search for")
    unknown = assert_refused(client.get("/api/search", params={"concept": "a 500 hz tome"}), 400,
                             "unknown concept", "closest", "a 500 hz tone")
    assert unknown["type"] == "QueryError"
    assert_refused(client.get("/api/search", params={"text": "x", "mode": "fast"}), 400, "mode")
    assert_refused(client.get("/api/search", params={"text": "x", "k": 0}), 422, "k")
    assert_refused(client.get("/api/search", params={"text": "x", "k": "many"}), 422, "k")
    assert_refused(client.get("/api/search", params={"text": "x", "path": "a[b"}), 400, "'['")
    assert_refused(client.post("/api/search", json={"vector": [1.0, 2.0]}), 400, "dimension")
    assert_refused(client.post("/api/search", json={"text": "a", "vector": [1.0]}), 400, "not")
    assert_refused(client.get("/api/similar", params={"file_id": 999999}), 404, "no file")


def test_upload_search_by_example_keeps_nothing(client, fixture, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with open(fixture.paths["tone_500_1500.wav"], "rb") as handle:
        data = handle.read()
    got = client.post("/api/search/upload", files={"file": ("example.wav", data, "audio/wav")},
                      data={"k": "2"})
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["query"]["kind"] == "audio" and body["query"]["audio_indexed"] is False
    assert body["results"][0]["path"] == fixture.paths["tone_500_1500.wav"]
    assert body["results"][0]["dense"] == pytest.approx(1.0, abs=1e-5)
    steered = client.post("/api/search/upload", files={"file": ("e.wav", data, "audio/wav")},
                          data={"k": "2", "concept": ["-a 1500 hz tone"], "mode": "dense"}).json()
    assert steered["query"]["steering"] == [{"concept": "a 1500 hz tone", "weight": -1.0}]
    assert steered["mode"] == "dense"
    assert list(tmp_path.iterdir()) == [], "the upload must not stay on disk"
    assert_refused(client.post("/api/search/upload",
                               files={"file": ("notes.txt", b"hello, not audio", "text/plain")}),
                   415, "notes.txt", "not audio")
    assert_refused(client.post("/api/search/upload", files={"file": ("e.wav", b"", "audio/wav")}),
                   400, "empty")
    assert list(tmp_path.iterdir()) == []


def test_upload_over_the_limit_is_refused(index, fixture):
    from clapdex.server import create_app

    small = TestClient(create_app(index, max_upload_bytes=1000))
    with open(fixture.paths["tone_500.wav"], "rb") as handle:
        data = handle.read()
    assert len(data) > 1000
    assert_refused(small.post("/api/search/upload", files={"file": ("a.wav", data, "audio/wav")}),
                   413, "too large", "limit")


def test_vocabulary_autocomplete(client):
    body = client.get("/api/vocabulary", params={"q": "50", "limit": 5}).json()
    assert body["total"] == 10
    assert body["concepts"] == ["a 250 hz tone", "a 500 hz tone", "a 750 hz tone",
                                "a 1500 hz tone", "a 2500 hz tone"]
    starts_first = client.get("/api/vocabulary", params={"q": "A"}).json()["concepts"]
    assert len(starts_first) == 9 and starts_first[-1] == "dog barking"  # contains 'a', last
    assert client.get("/api/vocabulary", params={"q": "SPE"}).json()["concepts"] == ["speech"]
    assert client.get("/api/vocabulary", params={"q": "zzz"}).json()["concepts"] == []


# ---- audit -------------------------------------------------------------------------------------

def test_concepts_prevalence_sorts_and_pages(client, index):
    everything = client.get("/api/concepts", params={"limit": 100}).json()
    assert everything["total"] == len(index.concepts())
    assert [r["concept"] for r in everything["rows"]] == [r.concept for r in index.concepts()]
    page = client.get("/api/concepts", params={"sort": "weight", "offset": 2, "limit": 3}).json()
    assert [r["concept"] for r in page["rows"]] == [r.concept for r in
                                                    index.concepts(sort="weight")[2:5]]
    assert_refused(client.get("/api/concepts", params={"sort": "name"}), 400, "sort")


def test_audit_expression_pages_and_positions_errors(client):
    body = client.get("/api/audit", params={"expression": "speech AND NOT \"a 500 hz tone\"",
                                            "limit": 3}).json()
    assert body["segments"] > 3 and len(body["matches"]) == 3
    assert set(body["matches"][0]) >= {"path", "file_id", "segment_id", "start", "end", "score",
                                       "concepts"}
    rest = client.get("/api/audit", params={"expression": "speech AND NOT \"a 500 hz tone\"",
                                            "limit": 3, "offset": 3}).json()
    assert not {m["segment_id"] for m in body["matches"]} & {m["segment_id"] for m in rest["matches"]}
    bad = assert_refused(client.get("/api/audit", params={"expression": "speech AND (dog"}), 400,
                         "unclosed")
    assert bad["position"] == 11 and bad["text"] == "speech AND (dog"
    unknown = assert_refused(client.get("/api/audit", params={"expression": "speeches"}), 400,
                             "speech")
    assert "position" not in unknown or unknown["position"] == 0
    assert_refused(client.get("/api/audit", params={"expression": " "}), 400, "empty")
    assert_refused(client.get("/api/audit"), 422, "expression")


def test_cooccurrence_and_poorly_explained(client, fixture):
    pairs = client.get("/api/cooccurrence", params={"min_count": 1}).json()["pairs"]
    assert pairs and all(p["lift"] > 1 for p in pairs)
    partners = client.get("/api/cooccurrence", params={"concept": "speech",
                                                       "min_count": 1}).json()["pairs"]
    assert all(p["concept_a"] == "speech" for p in partners)
    assert_refused(client.get("/api/cooccurrence", params={"concept": "speeches"}), 400, "speech")
    poor = client.get("/api/poorly-explained", params={"below": 0.5}).json()
    assert poor["total"] >= 1
    assert poor["rows"][0]["path"] == fixture.paths["noise.wav"]
    assert_refused(client.get("/api/poorly-explained", params={"below": 3}), 422, "below")


def test_report_is_html_with_its_own_policy(client):
    got = client.get("/api/report", params={"top": 4, "files": 1})
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/html")
    assert "clapdex audit report" in got.text
    assert "script-src" not in got.headers["content-security-policy"]


# ---- files and audio ---------------------------------------------------------------------------

def test_file_page_data_failures_and_missing(client, fixture):
    fid = file_id(client, fixture, "tone_2000_then_250.wav")
    body = client.get(f"/api/files/{fid}").json()
    assert body["status"] == "indexed" and body["on_disk"] and body["playable"]
    assert [s["start"] for s in body["profile"]] == [0.0, 2.0]
    assert body["profile"][0]["concepts"][0]["concept"] == "a 2000 hz tone"
    assert body["profile"][1]["concepts"][0]["concept"] == "a 250 hz tone"
    failed = client.get("/api/files", params={"status": "error"}).json()
    assert failed["total"] == 1 and "not a readable audio file" in failed["files"][0]["error"]
    broken = client.get(f"/api/files/{failed['files'][0]['id']}").json()
    assert broken["status"] == "error" and broken["profile"] == []
    gone = client.get(f"/api/files/{file_id(client, fixture, VANISHED)}").json()
    assert gone["on_disk"] is False and gone["profile"]
    assert_refused(client.get("/api/files/123456"), 404, "no file with id 123456")
    assert_refused(client.get("/api/files/../../etc/passwd"), 404)
    assert_refused(client.get("/api/files/abc"), 422)


def test_file_audio_range_requests(client, fixture):
    fid = file_id(client, fixture, "tone_500.wav")
    size = os.path.getsize(fixture.paths["tone_500.wav"])
    whole = client.get(f"/api/files/{fid}/audio")
    assert whole.status_code == 200 and len(whole.content) == size
    assert whole.headers["content-type"] == "audio/wav"
    assert whole.headers["accept-ranges"] == "bytes"
    part = client.get(f"/api/files/{fid}/audio", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-199/{size}"
    with open(fixture.paths["tone_500.wav"], "rb") as handle:
        assert part.content == handle.read()[100:200]
    tail = client.get(f"/api/files/{fid}/audio", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.headers["content-range"] == f"bytes {size - 10}-{size - 1}/{size}"
    past = client.get(f"/api/files/{fid}/audio", headers={"Range": f"bytes={size}-"})
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{size}"


def test_audio_refusals(client, fixture):
    assert_refused(client.get(f"/api/files/{file_id(client, fixture, VANISHED)}/audio"), 404,
                   "file missing")
    assert_refused(client.get(f"/api/files/{file_id(client, fixture, FAILED)}/audio"), 404,
                   "not indexed")
    assert_refused(client.get(f"/api/files/{file_id(client, fixture, AIFF)}/audio"), 415,
                   "segment")
    assert_refused(client.get("/api/files/999999/audio"), 404)
    assert_refused(client.get("/api/segments/999999/audio"), 404, "no segment")


def test_segment_audio_is_that_segment_decoded_to_wav(client, fixture):
    fid = file_id(client, fixture, AIFF)
    profile = client.get(f"/api/files/{fid}").json()["profile"]
    second = profile[1]
    seg = client.get(f"/api/segments/{second['segment_id']}").json()
    assert seg == {"segment_id": second["segment_id"], "file_id": fid, "path": fixture.paths[AIFF],
                   "start": 2.0, "end": 4.0}
    got = client.get(f"/api/segments/{second['segment_id']}/audio")
    assert got.status_code == 200 and got.headers["content-type"] == "audio/wav"
    samples, rate = soundfile.read(io.BytesIO(got.content))
    source, source_rate = soundfile.read(fixture.paths[AIFF])
    assert rate == source_rate and len(samples) == 2 * rate
    np.testing.assert_allclose(samples, source[2 * rate:4 * rate], atol=1e-4)


def test_hostile_names_are_data_and_pages_forbid_inline_script(client, fixture):
    fid = file_id(client, fixture, HOSTILE)
    assert client.get(f"/api/files/{fid}").json()["path"].endswith(HOSTILE)
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    for name in ("common.js", "search.js", "file.js", "audit.js"):
        script = client.get(f"/static/{name}").text
        assert "innerHTML" not in script and "insertAdjacentHTML" not in script


def test_status_and_pages(client, fixture):
    status = client.get("/api/status").json()
    assert status["counts"]["files"] == len(fixture.paths)  # the vanished one too, not the failed
    assert status["counts"]["errors"] == 1 and status["errors"][0]["path"] == fixture.failed_path
    server = status["server"]
    assert ".wav" in server["playable_extensions"] and ".aiff" not in server["playable_extensions"]
    assert server["token_required"] is False
    for page in ("/", "/file", "/audit"):
        assert client.get(page).status_code == 200
    assert_refused(client.get("/api/nothing-here"), 404)
    assert_refused(client.get("/static/../../../../etc/passwd"), 404)


def test_read_only_methods(client):
    assert client.delete("/api/files/1").status_code == 405
    assert client.put("/api/search").status_code == 405


# ---- access: token and Host ------------------------------------------------------------------

def test_token_is_needed_on_every_request(index):
    from clapdex.server import create_app

    guarded = TestClient(create_app(index, token="s3cret"))
    for url in ("/", "/api/status", "/static/search.js", "/openapi.json", "/api/files/1/audio"):
        assert_refused(guarded.get(url), 401, "token")
    assert_refused(guarded.get("/api/status", headers={"Authorization": "Bearer wrong"}), 401)
    assert guarded.get("/api/status", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert guarded.get("/api/status", params={"token": "s3cret"}).json()["server"]["token_required"]
    assert guarded.get("/", params={"token": "s3cret"}).status_code == 200


def test_allowed_hosts_refuse_rebinding(index):
    from clapdex.server import create_app

    local = TestClient(create_app(index, allowed_hosts=["127.0.0.1", "localhost"]),
                       base_url="http://127.0.0.1:8765")
    assert local.get("/api/status").status_code == 200
    assert local.get("/api/status", headers={"Host": "localhost:8765"}).status_code == 200
    assert_refused(local.get("/api/status", headers={"Host": "evil.example:8765"}), 421,
                   "answers only")


# ---- the schema --------------------------------------------------------------------------------

def test_every_api_route_is_in_the_openapi_schema(client, index):
    from clapdex.server import create_app

    app = create_app(index)
    schema = client.get("/openapi.json").json()
    documented = {(path, method.upper()) for path, item in schema["paths"].items()
                  for method in item}
    routes = {(route.path, method) for route in app.routes
              if route.path.startswith("/api/") for method in getattr(route, "methods", ())
              if method != "HEAD"}
    assert routes and routes <= documented
    assert not {p for p, _ in documented} - {r.path for r in app.routes}
    assert "SearchResults" in json.dumps(schema["components"])


def test_fast_json_is_the_same_text_as_to_jsonable(index):
    from pathlib import Path

    from clapdex import to_jsonable
    from clapdex.jsonable import dumps

    results = index.search(text="a 500 hz tone", k=3)
    assert dumps(results) == json.dumps(to_jsonable(results))
    mixed = {"a": np.float32(1.5), "b": np.arange(3), 3: (1, 2), "p": Path("/x"), "n": None}
    assert dumps(mixed) == json.dumps(to_jsonable(mixed))
    with pytest.raises(TypeError):
        dumps({1, 2})
