"""The protected-concept registry (issue 16 item 1): the library on a real SQLite index
(lifecycle, persistence, references), the CLI (``tracemark guard concepts``) and the
service routes (``/v1/collections/{name}/concepts``), with their bad inputs. Images and
concept files are generated here."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tracemark.cli import main
from tracemark.copydetect import CopyIndex
from tracemark.errors import (
    ConceptExistsError,
    GuardInputError,
    IndexFormatError,
    IndexInputError,
    IndexReadOnlyError,
    ReferenceNotFoundError,
    UnknownConceptError,
)
from tracemark.guard import Concept, ConceptRegistry
from tracemark.guard.registry import CONCEPT_PREFIX, STAMP_DOC
from tracemark.guard.types import MAX_ALIASES
from tracemark.index import Index

DATA = Path(__file__).parent / "data"


def texture(seed: int, side: int = 192) -> np.ndarray:
    """A textured RGB image (smoothed noise: local features for copy detection)."""
    import cv2

    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    return np.ascontiguousarray(cv2.GaussianBlur(img, (5, 5), 1.2))


def nimbus(**kw: object) -> Concept:
    return Concept(**{"name": "Captain Nimbus", "aliases": ("Nimbo", "キャプテン・ニンバス"),
                      "traits": ("a cape made of cloud", "silver lightning boots"),
                      "owner": "Skyworks", **kw})  # type: ignore[arg-type]


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    CopyIndex.create(tmp_path / "ix").close()
    return tmp_path / "ix"


# --- the library -----------------------------------------------------------------------


def test_add_get_list_remove_and_the_stamp(collection: Path) -> None:
    with CopyIndex.open(collection) as ci:
        reg = ConceptRegistry(ci)
        assert reg.list() == [] and reg.stamp() == "" and len(reg) == 0
        added = reg.add(nimbus())
        s1 = reg.stamp()
        reg.add(Concept("Mira Vex", kind="style", traits=("ink washes in teal",)))
        s2 = reg.stamp()
        assert len({"", s1, s2}) == 3
        assert [c.id for c in reg.list()] == ["captain-nimbus", "mira-vex"]
        assert reg.get("captain-nimbus") == added
        assert "mira-vex" in reg and "nobody" not in reg and 3 not in reg
        assert reg.remove("mira-vex").name == "Mira Vex"
        assert reg.stamp() not in {s1, s2}
        assert [c.id for c in reg.list()] == ["captain-nimbus"]
        # stored as the documented document, with its format version
        doc = json.loads(ci.index.document(CONCEPT_PREFIX + "captain-nimbus"))
        assert doc == {"format": "tracemark-concept", "version": 1, "concept": added.to_dict()}


def test_duplicate_id_is_refused_unless_replace(collection: Path) -> None:
    with CopyIndex.open(collection) as ci:
        reg = ConceptRegistry(ci)
        reg.add(nimbus())
        with pytest.raises(ConceptExistsError):
            reg.add(nimbus(owner="someone else"))
        with pytest.raises(ConceptExistsError):  # another name, the same id
            reg.add(Concept("captain  NIMBUS!"))
        assert reg.get("captain-nimbus").owner == "Skyworks"
        reg.add(nimbus(owner="someone else"), replace=True)
        assert reg.get("captain-nimbus").owner == "someone else"
        assert len(reg) == 1


@pytest.mark.parametrize("bad", ["nobody", "", "x" * 300, "a\x00b", "Captain Nimbus",
                                 "../captain-nimbus"])
def test_unknown_ids_are_unknown_concepts(collection: Path, bad: str) -> None:
    with CopyIndex.open(collection) as ci:
        reg = ConceptRegistry(ci)
        reg.add(nimbus())
        with pytest.raises(UnknownConceptError):
            reg.get(bad)
        with pytest.raises(UnknownConceptError):
            reg.remove(bad)
        assert bad not in reg
        with pytest.raises(GuardInputError):
            reg.get(7)  # type: ignore[arg-type]
        with pytest.raises(GuardInputError):
            reg.add({"name": "not a Concept"})  # type: ignore[arg-type]
        assert len(reg) == 1


@pytest.mark.parametrize("data", [
    {"name": ""},
    {"name": "   "},
    {"name": "x", "aliases": [f"a{i}" for i in range(MAX_ALIASES + 1)]},
    {"name": "x", "colour": "blue"},
    {"name": "x", "kind": "planet"},
    {"name": "x", "traits": "a single string"},
    {"name": "x\x07"},
    {"name": "x", "references": [-1]},
    {"traits": ["no name"]},
    ["not", "an", "object"],
])
def test_malformed_concepts_are_typed_errors(data: object) -> None:
    with pytest.raises(GuardInputError):
        Concept.from_dict(data)


def test_persistence_across_reopen_and_rollback_on_exception(collection: Path) -> None:
    with CopyIndex.open(collection) as ci:
        ConceptRegistry(ci).add(nimbus())
        stamp = ConceptRegistry(ci).stamp()
    with pytest.raises(RuntimeError), CopyIndex.open(collection) as ci:
        reg = ConceptRegistry(ci)
        reg.add(Concept("Mira Vex"))
        reg.remove("captain-nimbus")
        assert [c.id for c in reg.list()] == ["mira-vex"]  # the open transaction's view
        raise RuntimeError("boom")
    with CopyIndex.open(collection, read_only=True) as ci:
        reg = ConceptRegistry(ci)
        assert [c.id for c in reg.list()] == ["captain-nimbus"]
        assert reg.get("captain-nimbus") == nimbus()
        assert reg.stamp() == stamp  # the rolled-back writes' stamps are gone with them
        with pytest.raises(IndexReadOnlyError):
            reg.add(Concept("Mira Vex"))
        with pytest.raises(IndexReadOnlyError):
            reg.remove("captain-nimbus")


def test_another_handle_sees_committed_changes_by_the_stamp(collection: Path) -> None:
    with CopyIndex.open(collection) as writer, \
            CopyIndex.open(collection, read_only=True) as reader:
        w, r = ConceptRegistry(writer), ConceptRegistry(reader)
        seen = r.stamp()
        w.add(nimbus())
        assert r.stamp() == seen and r.list() == []  # not committed yet
        writer.commit()
        assert r.stamp() != seen and [c.id for c in r.list()] == ["captain-nimbus"]


def test_references_must_be_registered_and_removed_images_are_pruned(collection: Path) -> None:
    with CopyIndex.open(collection) as ci:
        a, b = ci.add(texture(1)).id, ci.add(texture(2)).id
        reg = ConceptRegistry(ci)
        with pytest.raises(ReferenceNotFoundError):
            reg.add(nimbus(references=(a, b + 1000)))
        assert len(reg) == 0  # nothing of the refused concept was written
        reg.add(nimbus(references=(a, b)))
        stamp = reg.stamp()
    with CopyIndex.open(collection) as ci:
        reg = ConceptRegistry(ci)
        assert ci.remove(a)
        assert reg.get("captain-nimbus").references == (b,)  # never a dangling id
        assert [c.references for c in reg.list()] == [(b,)]
        assert reg.stamp() == stamp
        assert reg.prune() == {"captain-nimbus": [a]}
        assert reg.prune() == {}
        c = ci.add(texture(3)).id
        assert c not in (a, b)  # ids are never reused: a pruned id cannot come back
    with CopyIndex.open(collection, read_only=True) as ci:
        stored = json.loads(ci.index.document(CONCEPT_PREFIX + "captain-nimbus"))
        assert stored["concept"]["references"] == [b]


def test_index_registered_answers_existing_ids_in_bulk(collection: Path) -> None:
    with CopyIndex.open(collection) as ci:
        a = ci.add(texture(8)).id
        ix = ci.index
        many = range(a - 6000, a + 6000)  # more ids than one query takes
        assert ix.registered(many) == {a} and ix.registered([]) == set()
        ci.remove(a)
        assert ix.registered([a]) == set()  # the open transaction's own writes
        with pytest.raises(IndexInputError):
            ix.registered(["1"])  # type: ignore[list-item]


def test_a_newer_or_corrupt_concept_document_is_a_format_error(collection: Path) -> None:
    with CopyIndex.open(collection) as ci:
        reg = ConceptRegistry(ci)
        newer = {"format": "tracemark-concept", "version": 2, "concept": nimbus().to_dict()}
        ci.index.put_document(CONCEPT_PREFIX + "captain-nimbus", json.dumps(newer).encode())
        with pytest.raises(IndexFormatError, match="newer"):
            reg.list()
        ci.index.put_document(CONCEPT_PREFIX + "captain-nimbus", b"\xff\xfe{")
        with pytest.raises(IndexFormatError, match="UTF-8"):
            reg.get("captain-nimbus")
        broken = {"format": "tracemark-concept", "version": 1, "concept": {"name": ""}}
        ci.index.put_document(CONCEPT_PREFIX + "captain-nimbus", json.dumps(broken).encode())
        with pytest.raises(IndexFormatError, match="corrupt"):
            reg.get("captain-nimbus")
        ci.rollback()


def test_index_documents_by_prefix_and_deletion_in_the_transaction(tmp_path: Path) -> None:
    with Index.create(tmp_path / "ix", vector_specs={}) as ix:
        for name in ["a%b", "a_c", "ab", "b", "a%b.x", "é-1"]:
            ix.put_document(name, name.encode())
        assert ix.document_names("a%") == ["a%b", "a%b.x"]  # no LIKE wildcards
        assert ix.document_names("a_") == ["a_c"]
        assert ix.document_names("") == sorted(["a%b", "a_c", "ab", "b", "a%b.x", "é-1"])
        assert ix.document_names("é") == ["é-1"]
        assert ix.documents("a%") == {"a%b": b"a%b", "a%b.x": b"a%b.x"}
        assert list(ix.documents()) == ix.document_names()
        assert ix.document_names("nothing") == [] and ix.document_names("\x00") == []
        with pytest.raises(IndexInputError):
            ix.document_names(None)  # type: ignore[arg-type]
        ix.put_document("n" * 256, b"long")  # names of up to 256 characters
        with pytest.raises(IndexInputError):
            ix.put_document("n" * 257, b"too long")
        ix.commit()
        assert ix.delete_document("ab") and not ix.delete_document("ab")
        with pytest.raises(IndexInputError):
            ix.delete_document("")
        ix.rollback()
        assert ix.document("ab") == b"ab"


@pytest.mark.parametrize("fixture", ["index_v2", "index_v1"])
def test_an_older_index_fixture_takes_concepts_on_a_writable_open(tmp_path: Path,
                                                                  fixture: str) -> None:
    dst = tmp_path / fixture
    shutil.copytree(DATA / fixture, dst)
    with Index.open(dst, read_only=True) as ix:
        assert ConceptRegistry(ix).list() == [] and ConceptRegistry(ix).stamp() == ""
        before = {n: ix.document(n) for n in ix.document_names()}
        assert bool(before) == (fixture == "index_v2")  # the v2 fixture's own document
        if fixture == "index_v1":
            with pytest.raises(IndexReadOnlyError):
                ConceptRegistry(ix).add(nimbus())
        refs = [r.id for r in ix.list()]
    with Index.open(dst) as ix:
        ConceptRegistry(ix).add(nimbus(references=tuple(refs[:1])))
    with Index.open(dst, read_only=True) as ix:
        reg = ConceptRegistry(ix)
        assert [c.id for c in reg.list()] == ["captain-nimbus"]
        assert reg.get("captain-nimbus").references == tuple(refs[:1])
        assert all(ix.document(n) == d for n, d in before.items())  # left as they were
        assert set(ix.document_names()) == set(before) | {CONCEPT_PREFIX + "captain-nimbus",
                                                          STAMP_DOC}


def test_a_registry_needs_a_collection() -> None:
    with pytest.raises(GuardInputError):
        ConceptRegistry("a path")  # type: ignore[arg-type]


# --- the command line -----------------------------------------------------------------


def _run(*args: str) -> tuple[int, list[dict], str]:
    res = CliRunner().invoke(main, list(args))
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.strip()]
    return res.exit_code, lines, res.stderr


def test_cli_add_with_reference_images_list_and_remove(tmp_path: Path) -> None:
    from tracemark.imageio import encode_image

    store = str(tmp_path / "ix")
    img = tmp_path / "ref.png"
    img.write_bytes(encode_image(texture(5), "PNG"))
    code, lines, _ = _run("guard", "concepts", "add", "--store", store, "--name",
                          "Captain Nimbus", "--kind", "character", "--owner", "Skyworks",
                          "--alias", "Nimbo", "--alias", "Nimbus", "--trait",
                          "a cape made of cloud", "--generic", "a caped hero",
                          "--reference", str(img), "--reference", str(img))
    assert code == 0, lines
    (line,) = lines
    assert line["error"] is None and line["id"] == "captain-nimbus"
    ref = line["concept"]["references"]
    assert len(ref) == 2 and ref[0] == ref[1]  # the same image, registered once
    with CopyIndex.open(Path(store), read_only=True) as ci:
        assert len(ci) == 1 and ci.index.get(ref[0]).source == str(img)
    code, lines, _ = _run("guard", "concepts", "add", "--store", store, "--name",
                          "Captain Nimbus")
    assert code == 3 and lines[0]["error"]["type"] == "ConceptExistsError"
    code, lines, _ = _run("guard", "concepts", "add", "--store", store, "--name",
                          "Captain Nimbus", "--owner", "New", "--replace")
    assert code == 0 and lines[0]["concept"]["owner"] == "New"
    code, lines, _ = _run("guard", "concepts", "list", "--store", store)
    assert code == 0 and [x["id"] for x in lines] == ["captain-nimbus"]
    assert lines[0]["owner"] == "New" and lines[0]["references"] == []
    code, lines, _ = _run("guard", "concepts", "remove", "--store", store, "captain-nimbus",
                          "nobody")
    assert code == 1
    assert [(x["id"], x["removed"]) for x in lines] == [("captain-nimbus", True),
                                                        ("nobody", False)]
    assert lines[1]["error"]["type"] == "UnknownConceptError"
    assert _run("guard", "concepts", "list", "--store", store)[1] == []


def test_cli_a_bad_reference_image_adds_nothing(tmp_path: Path) -> None:
    from tracemark.imageio import encode_image

    store = str(tmp_path / "ix")
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(encode_image(texture(6), "PNG"))
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code, lines, err = _run("guard", "concepts", "add", "--store", store, "--name", "Mira",
                            "--reference", str(good), "--reference", str(bad))
    assert code == 3 and lines[0]["error"]["type"] == "CorruptImageError", lines
    with CopyIndex.open(Path(store), read_only=True) as ci:
        assert len(ci) == 0 and ConceptRegistry(ci).list() == []  # the good image rolled back


def test_cli_from_file_reports_bad_items_and_adds_the_rest(tmp_path: Path) -> None:
    store = tmp_path / "ix"
    CopyIndex.create(store).close()
    good = [Concept(f"Hero {i}", traits=(f"trait {i}",)).to_dict() for i in range(3)]
    bad = [{"name": ""}, {"name": "x", "aliases": [f"a{i}" for i in range(300)]},
           {"name": "y", "colour": "red"}, {"name": "z", "kind": "planet"},
           {"name": "w", "references": [12345]}]
    rows = [json.dumps(x).encode() for x in [good[0], *bad[:2]]] + [b"\xff\xfe\x00 not utf-8",
                                                                    b"{not json"] \
        + [json.dumps(x, ensure_ascii=False).encode() for x in [*bad[2:], good[1], good[2]]]
    jsonl = tmp_path / "concepts.jsonl"
    jsonl.write_bytes(b"\n".join(rows[:3]) + b"\n\n" + b"\n".join(rows[3:]) + b"\n")
    code, lines, err = _run("guard", "concepts", "add", "--store", str(store), "--from",
                            str(jsonl))
    assert code == 1, err
    ok = sorted(x["id"] for x in lines if x["error"] is None)
    assert ok == ["hero-0", "hero-1", "hero-2"]
    errors = {x["source"].rsplit(":", 1)[1]: x["error"]["type"] for x in lines if x["error"]}
    assert errors == {"2": "GuardInputError", "3": "GuardInputError", "5": "GuardInputError",
                      "6": "GuardInputError", "7": "GuardInputError", "8": "GuardInputError",
                      "9": "ReferenceNotFoundError"}
    # a JSON array file; an existing id is an error, --replace replaces
    arr = tmp_path / "concepts.json"
    arr.write_text(json.dumps([good[0], {"name": "Hero 9"}]), encoding="utf-8")
    code, lines, _ = _run("guard", "concepts", "add", "--store", str(store), "--from", str(arr))
    assert code == 1 and [x["error"] and x["error"]["type"] for x in lines] == \
        ["ConceptExistsError", None]
    assert lines[1]["source"] == f"{arr}[1]"
    code, lines, _ = _run("guard", "concepts", "add", "--store", str(store), "--from", str(arr),
                          "--replace")
    assert code == 0 and len(lines) == 2
    code, lines, _ = _run("guard", "concepts", "list", "--store", str(store))
    assert [x["id"] for x in lines] == ["hero-0", "hero-1", "hero-2", "hero-9"]


def test_cli_usage_errors(tmp_path: Path) -> None:
    missing = str(tmp_path / "nothing")
    assert _run("guard", "concepts", "list", "--store", missing)[0] == 2
    assert _run("guard", "concepts", "remove", "--store", missing, "x")[0] == 2
    assert _run("guard", "concepts", "add", "--store", missing, "--from",
                str(tmp_path / "no.jsonl"))[0] == 2
    assert _run("guard", "concepts", "add", "--store", missing)[0] == 2  # no --name, no --from
    f = tmp_path / "c.jsonl"
    f.write_text("{}", encoding="utf-8")
    assert _run("guard", "concepts", "add", "--store", missing, "--name", "x", "--from",
                str(f))[0] == 2
    assert _run("guard", "concepts", "add", "--store", missing, "--name", "x", "--kind",
                "planet")[0] == 2
    assert not Path(missing).exists()  # nothing was created by a refused command


# --- the service --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tracemark.service.app import ServiceSettings, create_app

    app = create_app(ServiceSettings(data_dir=tmp_path_factory.mktemp("guard-svc")))
    keys = app.state.tm.keys
    tokens = {"admin": keys.create(scope="write", collections=["*"], name="admin")[0],
              "reader": keys.create(scope="read", collections=["works"], name="reader")[0]}
    with TestClient(app) as client:
        h = {"Authorization": f"Bearer {tokens['admin']}"}
        assert client.post("/v1/collections", json={"name": "works"}, headers=h).status_code == 201
        yield client, {k: {"Authorization": f"Bearer {v}"} for k, v in tokens.items()}, app


def _error(res, status: int, type_: str) -> None:  # type: ignore[no-untyped-def]
    assert res.status_code == status, res.text
    assert res.json()["error"]["type"] == type_, res.text


def test_service_concepts_crud(service) -> None:  # type: ignore[no-untyped-def]
    from tracemark.imageio import encode_image

    client, h, app = service
    base = "/v1/collections/works/concepts"
    img = {"image": ("ref.png", io.BytesIO(encode_image(texture(7), "PNG")), "image/png")}
    ref = client.post("/v1/collections/works/images", files=img, headers=h["admin"])
    assert ref.status_code == 201, ref.text
    ref_id = ref.json()["ref_id"]
    body = {**nimbus().to_dict(), "references": [ref_id]}
    del body["id"]
    res = client.post(base, json=body, headers=h["admin"])
    assert res.status_code == 201, res.text
    assert res.json() == nimbus(references=(ref_id,)).to_dict()
    _error(client.post(base, json=body, headers=h["admin"]), 409, "ConceptExists")
    res = client.post(base, params={"replace": "true"}, json={**body, "owner": "New"},
                      headers=h["admin"])
    assert res.status_code == 201 and res.json()["owner"] == "New"
    listed = client.get(base, headers=h["reader"]).json()
    assert [c["id"] for c in listed["concepts"]] == ["captain-nimbus"] and listed["stamp"]
    assert client.get(f"{base}/captain-nimbus", headers=h["reader"]).json()["owner"] == "New"
    # the library sees what the service committed, through the service's collection
    assert ConceptRegistry(app.state.tm.collection("works")).get("captain-nimbus").owner == "New"
    # removing the image prunes it from the concept
    assert client.delete(f"/v1/collections/works/images/{ref_id}",
                         headers=h["admin"]).status_code == 200
    assert client.get(f"{base}/captain-nimbus", headers=h["admin"]).json()["references"] == []
    res = client.delete(f"{base}/captain-nimbus", headers=h["admin"])
    assert res.status_code == 200 and res.json() == {"removed": "captain-nimbus"}
    _error(client.get(f"{base}/captain-nimbus", headers=h["admin"]), 404, "UnknownConcept")
    _error(client.delete(f"{base}/captain-nimbus", headers=h["admin"]), 404, "UnknownConcept")
    assert client.get(base, headers=h["admin"]).json()["concepts"] == []


@pytest.mark.parametrize(("body", "status", "type_"), [
    ({"name": ""}, 422, "ValidationError"),
    ({"name": "   "}, 422, "ValidationError"),
    ({"name": "x\u0007y"}, 422, "ValidationError"),
    ({"name": "x", "aliases": [f"a{i}" for i in range(MAX_ALIASES + 1)]}, 422, "ValidationError"),
    ({"name": "x", "colour": "blue"}, 422, "ValidationError"),
    ({"name": "x", "kind": "planet"}, 422, "ValidationError"),
    ({"name": "x", "id": "Not An Id"}, 422, "ValidationError"),
    ({"name": "x", "references": [2**40]}, 404, "UnknownImage"),
    ({"name": "x" * 10_000}, 422, "ValidationError"),
])
def test_service_refuses_bad_concepts(service, body, status, type_) -> None:  # type: ignore[no-untyped-def]
    client, h, _ = service
    _error(client.post("/v1/collections/works/concepts", json=body, headers=h["admin"]),
           status, type_)
    assert "x" not in [c["name"] for c in client.get("/v1/collections/works/concepts",
                                                     headers=h["admin"]).json()["concepts"]]


def test_service_bad_requests_auth_and_unknown_collections(service) -> None:  # type: ignore[no-untyped-def]
    client, h, _ = service
    base = "/v1/collections/works/concepts"
    res = client.post(base, content=b'{"name": "\xff\xfe"}', headers={
        **h["admin"], "Content-Type": "application/json"})
    assert res.status_code in (400, 422), res.text
    _error(client.post(base, json={"name": "x"}, headers=h["reader"]), 403, "Forbidden")
    _error(client.delete(f"{base}/x", headers=h["reader"]), 403, "Forbidden")
    assert client.get(base).status_code == 401
    _error(client.get("/v1/collections/nowhere/concepts", headers=h["admin"]), 404,
           "UnknownCollection")
    _error(client.post("/v1/collections/nowhere/concepts", json={"name": "x"},
                       headers=h["admin"]), 404, "UnknownCollection")
    _error(client.get(f"{base}/Bad%20Id", headers=h["admin"]), 422, "ValidationError")
    _error(client.get(f"{base}/{'a' * 121}", headers=h["admin"]), 422, "ValidationError")


def test_cli_from_file_creates_the_collection_as_the_flags_do(tmp_path: Path) -> None:
    """`concepts add` says "created if needed" (README, --help); the --from path refused a
    new --store with "no index" (found by break16)."""
    store = tmp_path / "new"
    f = tmp_path / "c.jsonl"
    f.write_text("\n".join(json.dumps(Concept(f"Hero {i}").to_dict()) for i in range(2)),
                 encoding="utf-8")
    code, lines, err = _run("guard", "concepts", "add", "--store", str(store), "--from", str(f))
    assert code == 0, err
    assert [x["id"] for x in lines] == ["hero-0", "hero-1"]
    assert [x["id"] for x in _run("guard", "concepts", "list", "--store", str(store))[1]] == \
        ["hero-0", "hero-1"]
