"""Near-duplicate groups: edited copies and exact duplicates within a folder or a collection.

The job people use imagededup for, done with the copy-detection matcher of
:class:`~tracemark.copydetect.CopyIndex` (retrieval, RANSAC verification, the one decision
rule of :mod:`tracemark.copydetect.decide`), so that a crop, a screenshot or a recoloured
copy is grouped with its original, with the evidence for every pair.

How (never an all-pairs comparison; the work grows with the index, not with the square of
the images):

* **exact duplicates** are found by content hash (:func:`~tracemark.copydetect.content_hash`
  of the decoded pixels, the hash :meth:`CopyIndex.add` reports as ``duplicate_of``): an
  image whose pixels are already registered is paired with that reference at once, neither
  searched nor added;
* **near duplicates**: each new image is searched against what is already registered
  (:meth:`CopyIndex.search`, the index's ``candidates`` verified, at most ``k`` matches
  kept), then added. A match whose ``decision`` is true (a calibrated p-value <= alpha, or
  enough inliers on an uncalibrated index) makes a pair;
* **groups** are the connected components (union-find) of the pairs.

:class:`Deduper` works on one *registry*, the :class:`CopyIndex` new images are added to:
a user's collection (incremental: a second run checks only the images not yet registered,
against everything registered), or a temporary index in a temporary directory (a folder
without a store; removed on close). With ``collection`` a read-only collection is searched
too while new images go to a temporary registry (check a folder against a collection
without writing to it). :func:`find_duplicates` runs it over a batch.

A temporary registry can be calibrated (:meth:`Deduper.calibrate`) on background images
known to hold no copies of one another or of the images; since the null distribution of
scores depends on the collection searched, calibration happens once the images are
registered (:meth:`Deduper.register`), and each image is then searched against all the
others (:meth:`Deduper.search_registered`, itself left out): two passes, still k
candidates per image.

A pair ``(a, b)`` reads: ``b`` was searched and matched ``a``. ``region`` is ``b``'s
outline in ``a``'s pixels (where the copy comes from), ``query_region`` ``a``'s outline in
``b``'s pixels (:class:`~tracemark.copydetect.Match`); exact pairs carry neither.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tracemark.copydetect.describe import content_hash
from tracemark.copydetect.index import CALIBRATION_DOC, CopyIndex, Match, MatchConfig
from tracemark.errors import ClosedError, ConfigError, TracemarkError
from tracemark.imageio import rgb_view

__all__ = [
    "DEFAULT_K",
    "DedupItem",
    "DedupMember",
    "DedupPair",
    "DedupGroup",
    "DedupReport",
    "Deduper",
    "find_duplicates",
]

DEFAULT_K = 10
"""Matches kept per searched image (the index's ``MatchConfig.candidates`` are verified)."""

PairKind = Literal["exact", "near"]
_Node = tuple[str, int]
"""A union-find node: ``("ref", id)`` a reference of the collection, ``("item", n)`` the
n-th image checked by this deduper that is in no collection (temporary registry)."""


@dataclass(frozen=True)
class DedupMember:
    """One image of a group."""

    source: str | None
    """The path (or label) the image was checked or registered under."""
    id: int | None
    """Its reference id in the user's collection; None when it is in none (a folder run, or
    an exact duplicate that was not added)."""
    new: bool
    """Checked in this run (False: a reference registered before)."""


@dataclass(frozen=True)
class DedupPair:
    """The evidence that ``b`` copies ``a`` (``b`` was searched and matched ``a``)."""

    a: str | None
    b: str | None
    a_id: int | None
    b_id: int | None
    kind: PairKind
    """``"exact"``: the same decoded pixels (content hash); ``"near"``: a verified match."""
    inliers: int | None = None
    """RANSAC inliers of the verification (near pairs)."""
    region: list[list[float]] | None = None
    """``b``'s outline in ``a``'s pixels: 4 corners ``[x, y]`` (near pairs)."""
    query_region: list[list[float]] | None = None
    """``a``'s outline in ``b``'s pixels: 4 corners ``[x, y]`` (near pairs)."""
    p_value: float | None = None
    """Calibrated p-value of the match (None on an uncalibrated index, or exact)."""
    raw_score: float | None = None
    """:func:`~tracemark.copydetect.raw_score` of the match (near pairs)."""
    flipped: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DedupGroup:
    """A connected component of pairs: ``members`` in the order they were met."""

    members: list[DedupMember]
    pairs: list[DedupPair]

    def to_dict(self) -> dict[str, Any]:
        return {"size": len(self.members), "members": [asdict(m) for m in self.members],
                "pairs": [p.to_dict() for p in self.pairs]}


@dataclass
class DedupItem:
    """What checking one image gave: its pairs, or why it was not checked."""

    source: str | None
    id: int | None = None
    """Its reference id in the user's collection (after an add, or already there)."""
    pairs: list[DedupPair] = field(default_factory=list)
    registered: bool = False
    """Its pixels were already registered under the same source: not checked again."""
    error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "id": self.id, "registered": self.registered,
                "pairs": [p.to_dict() for p in self.pairs], "error": self.error}


@dataclass
class DedupReport:
    """The outcome of a batch: the groups, every item, and counts."""

    groups: list[DedupGroup]
    items: list[DedupItem]
    rule: dict[str, Any] = field(default_factory=dict)
    """How pairs were decided (:meth:`CopyIndex.decision_rule` of the registry)."""

    def summary(self) -> dict[str, int]:
        """``checked`` (new images searched or paired by hash), ``registered`` (already in
        the collection under the same source), ``errors``, ``groups``,
        ``images_in_groups``, ``exact_pairs``, ``near_pairs``."""
        return summarize(self.groups, self.items)


def summarize(groups: Sequence[DedupGroup], items: Sequence[DedupItem]) -> dict[str, int]:
    """The counts of :meth:`DedupReport.summary`."""
    pairs = [p for g in groups for p in g.pairs]
    return {
        "checked": sum(1 for i in items if i.error is None and not i.registered),
        "registered": sum(1 for i in items if i.registered),
        "errors": sum(1 for i in items if i.error is not None),
        "groups": len(groups),
        "images_in_groups": sum(len(g.members) for g in groups),
        "exact_pairs": sum(1 for p in pairs if p.kind == "exact"),
        "near_pairs": sum(1 for p in pairs if p.kind == "near"),
    }


def _same_source(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    if a == b:
        return True
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, ValueError):
        return False


class Deduper:
    """Groups near duplicates incrementally (see the module docstring).

    ``registry``: the collection new images are added to, or None for a temporary index in a
    temporary directory, built with ``config`` (removed on :meth:`close`). ``add=False`` with
    a ``registry`` searches it read-only and registers new images in a temporary index
    instead (they are still grouped with one another); the temporary index takes the
    registry's calibration, so one decision rule applies. ``k``: matches kept per search
    (>= 1). Raises :class:`~tracemark.errors.ConfigError` for a bad ``k``.

    Use as a context manager or call :meth:`close` (idempotent); the user's ``registry`` is
    not closed.
    """

    def __init__(self, registry: CopyIndex | None = None, *, add: bool = True,
                 k: int = DEFAULT_K, config: MatchConfig | None = None) -> None:
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"k must be an integer >= 1, got {k!r}")
        self.k = k
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._temp_index: CopyIndex | None = None
        self.collection: CopyIndex | None = None
        """The user's collection, searched (and added to when ``add``); None for a folder."""
        if registry is not None and add:
            self.collection, self.registry = registry, registry
        else:
            self.collection = registry
            self.registry = self._temporary(config or (registry.config if registry else None),
                                            calibration_from=registry)
        self._parent: dict[_Node, _Node] = {}
        self._members: dict[_Node, DedupMember] = {}
        self._order: dict[_Node, int] = {}
        self._pairs: dict[frozenset[_Node], DedupPair] = {}
        self._temp_nodes: dict[int, _Node] = {}
        """Temporary registry reference id -> the item it registered."""
        self._items = 0
        self._closed = False

    # --- lifecycle --------------------------------------------------------------------

    def _temporary(self, config: MatchConfig | None, *,
                   calibration_from: CopyIndex | None) -> CopyIndex:
        self._tmp = tempfile.TemporaryDirectory(prefix="tracemark-dedup-")
        path = Path(self._tmp.name) / "index"
        try:
            ci = CopyIndex.create(path, config)
            if calibration_from is not None and calibration_from.null_model is not None:
                raw = calibration_from._calibration_raw()[0]
                if raw is not None:
                    ci.index.put_document(CALIBRATION_DOC, raw)
                ci.close()  # reopened below, so that it loads the copied calibration
                ci = CopyIndex.open(path, config=config)
        except BaseException:
            self._tmp.cleanup()
            raise
        self._temp_index = ci
        return ci

    def close(self) -> None:
        """Close and remove the temporary index (idempotent); the user's collection stays
        open (its owner commits and closes it)."""
        if self._closed:
            return
        self._closed = True
        if self._temp_index is not None:
            self._temp_index.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Deduper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def temporary(self) -> bool:
        """New images go to a temporary index (nothing is written to a collection)."""
        return self._temp_index is not None

    # --- checking ---------------------------------------------------------------------

    def check(self, image: Any, *, source: str | None = None) -> DedupItem:
        """Check one image against everything registered, then register it.

        ``image``: anything :func:`tracemark.imageio.load_image` takes (a path, an
        ``(H, W, 3)`` uint8 array...). Returns its :class:`DedupItem` (the pairs it made).
        Raises the loader's :class:`~tracemark.errors.ImageError` for bad input (nothing is
        registered then) and :class:`~tracemark.errors.ClosedError` after :meth:`close`.
        """
        return self._check(image, source=source, search=True)

    def register(self, image: Any, *, source: str | None = None) -> DedupItem:
        """Register one image without searching (first pass of a calibrated folder run):
        its exact-duplicate pair, if any, is made; near pairs come from
        :meth:`search_registered`. Errors as :meth:`check`."""
        return self._check(image, source=source, search=False)

    def calibrate(self, background: Sequence[Any]) -> dict[str, Any]:
        """Calibrate the temporary registry on ``background`` images
        (:meth:`CopyIndex.calibrate`: at least 4, none a copy of a registered image);
        call it after :meth:`register`-ing the images. Raises
        :class:`~tracemark.errors.ConfigError` when the registry is the user's collection
        (calibrate it with ``tracemark index calibrate``) or the background is too small."""
        if not self.temporary or self.collection is not None:
            raise ConfigError("only a temporary index is calibrated here: calibrate the "
                              "collection itself (tracemark index calibrate)")
        return self.registry.calibrate(background)

    def search_registered(self, image: Any, *, source: str | None = None) -> DedupItem:
        """Second pass: search an image registered by :meth:`register` against every other
        registered image (itself left out). An image that was an exact duplicate, or not
        registered, is not searched again."""
        rgb = rgb_view(image)
        ref_id = self.registry.index.find(content_hash(rgb))
        item = DedupItem(source=source if source is not None else _label(image))
        if ref_id is None:
            return item
        own = self._temp_nodes.get(ref_id)
        if own is None or not _same_source(self._members[own].source, item.source):
            return item  # an exact duplicate (paired by hash in the first pass)
        for m in self.registry.search(rgb, k=self.k + 1):
            if m.ref_id != ref_id and m.decision:
                item.pairs.append(self._near(self._node_of(self.registry, m.ref_id), own, m))
        return item

    def _check(self, image: Any, *, source: str | None, search: bool) -> DedupItem:
        if self._closed:
            raise ClosedError("the deduper is closed")
        rgb = rgb_view(image)
        label = source if source is not None else _label(image)
        item = DedupItem(source=label)
        h = content_hash(rgb)
        for ci in self._searched():
            ref_id = ci.index.find(h)
            if ref_id is None:
                continue
            node = self._node_of(ci, ref_id)
            ref_source = self._members[node].source
            if ci is self.collection and _same_source(ref_source, label):
                item.registered, item.id = True, ref_id  # checked in an earlier run
                return item
            own = self._new_item(label)
            item.pairs.append(self._exact(node, own))
            return item
        found: list[tuple[_Node, Match]] = []
        if search:
            for ci in self._searched():
                found += [(self._node_of(ci, m.ref_id), m) for m in ci.search(rgb, k=self.k)
                          if m.decision]
        res = self.registry.add(rgb, source=label)
        if res.duplicate_of is not None:  # not after the lookup above, unless a race
            own = self._new_item(label)
            item.pairs.append(self._exact(self._node_of(self.registry, res.duplicate_of), own))
            return item
        if self.registry is self.collection:
            own = ("ref", res.id)
            item.id = res.id
            self._add_node(own, DedupMember(label, res.id, True))
        else:
            own = self._new_item(label)
            self._temp_nodes[res.id] = own
        item.pairs = [self._near(a, own, m) for a, m in found]
        return item

    # --- results ----------------------------------------------------------------------

    def groups(self) -> list[DedupGroup]:
        """The connected components of the pairs so far (two members or more), in the order
        their first member was met; members and pairs likewise."""
        comps: dict[_Node, list[_Node]] = {}
        for node in sorted(self._parent, key=self._order.__getitem__):
            comps.setdefault(self._find(node), []).append(node)
        pairs_of: dict[_Node, list[DedupPair]] = {}
        for key, pair in self._pairs.items():
            pairs_of.setdefault(self._find(next(iter(key))), []).append(pair)
        return [DedupGroup([self._members[n] for n in nodes], pairs_of.get(root, []))
                for root, nodes in comps.items() if len(nodes) >= 2]

    # --- internals --------------------------------------------------------------------

    def _searched(self) -> list[CopyIndex]:
        out = [] if self.collection is None else [self.collection]
        if self.registry is not self.collection:
            out.append(self.registry)
        return out

    def _new_item(self, label: str | None) -> _Node:
        node = ("item", self._items)
        self._items += 1
        self._add_node(node, DedupMember(label, None, True))
        return node

    def _add_node(self, node: _Node, member: DedupMember) -> None:
        if node not in self._parent:
            self._parent[node] = node
            self._order[node] = len(self._order)
            self._members[node] = member

    def _node_of(self, ci: CopyIndex, ref_id: int) -> _Node:
        """The node of a reference of ``ci`` (created for a collection's reference)."""
        if ci is not self.collection:
            return self._temp_nodes[ref_id]
        node = ("ref", ref_id)
        if node not in self._parent:
            self._add_node(node, DedupMember(ci.index.get(ref_id).source, ref_id, False))
        return node

    def _find(self, node: _Node) -> _Node:
        parent = self._parent
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    def _union(self, a: _Node, b: _Node) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            if self._order[rb] < self._order[ra]:
                ra, rb = rb, ra
            self._parent[rb] = ra

    def _record(self, a: _Node, b: _Node, pair: DedupPair) -> DedupPair:
        key = frozenset((a, b))
        old = self._pairs.get(key)
        if old is None or (old.kind == "near" and pair.kind == "near"
                           and (pair.raw_score or 0) > (old.raw_score or 0)) \
                or pair.kind == "exact":
            self._pairs[key] = pair
        self._union(a, b)
        return pair

    def _exact(self, a: _Node, b: _Node) -> DedupPair:
        ma, mb = self._members[a], self._members[b]
        return self._record(a, b, DedupPair(ma.source, mb.source, ma.id, mb.id, "exact"))

    def _near(self, a: _Node, b: _Node, m: Match) -> DedupPair:
        ma, mb = self._members[a], self._members[b]
        return self._record(a, b, DedupPair(
            ma.source, mb.source, ma.id, mb.id, "near", inliers=m.inliers, region=m.region,
            query_region=m.query_region, p_value=m.p_value, raw_score=m.raw_score,
            flipped=m.flipped))


def _label(image: Any) -> str | None:
    return str(image) if isinstance(image, str | Path) else None


def find_duplicates(
    images: Iterable[Any],
    *,
    index: CopyIndex | None = None,
    add: bool = True,
    background: Sequence[Any] = (),
    k: int = DEFAULT_K,
    config: MatchConfig | None = None,
    load: Callable[[Any], Any] | None = None,
    on_item: Callable[[DedupItem], None] | None = None,
    on_registered: Callable[[DedupItem], None] | None = None,
) -> DedupReport:
    """Group the near duplicates of ``images`` (see the module docstring).

    ``images``: paths, ``(H, W, 3)`` uint8 arrays, or ``(source, image)`` tuples.
    ``index``: a collection to check them against (and to add them to, unless ``add`` is
    false); None: a folder run on a temporary index built with ``config``. ``background``
    (folder runs only; at least 4 images, none a copy of an input): calibrate the temporary
    index once the images are registered, then search each against the others and decide
    by p-value (two passes). ``load``, when given, turns each image into what the matcher
    reads (the command line's ``--formats`` loader); its typed errors are the item's.

    A bad image becomes an item with an ``error`` (``{"type", "message", "source"}``) and
    the batch carries on. ``on_item`` is called with each finished item, in input order;
    ``on_registered`` with each item of the first pass of a calibrated run. Raises
    :class:`~tracemark.errors.ConfigError` for a bad ``k``, a ``background`` with an
    ``index``, or a background too small to calibrate on.
    """
    pairs = [_as_item(x) for x in images]
    if background and index is not None:
        raise ConfigError("background applies to a folder run (calibrate a collection with "
                          "tracemark index calibrate)")
    items: list[DedupItem] = []

    def run(fn: Callable[..., DedupItem], source: str | None, image: Any) -> DedupItem:
        try:
            item = fn(image if load is None else load(image), source=source)
        except TracemarkError as exc:
            err = exc.to_dict()
            err["source"] = err.get("source") or source
            item = DedupItem(source=source, error=err)
        return item

    def done(item: DedupItem) -> None:
        items.append(item)
        if on_item is not None:
            on_item(item)

    with Deduper(index, add=add, k=k, config=config) as dd:
        if background:
            firsts = []
            for s, im in pairs:
                firsts.append(run(dd.register, s, im))
                if on_registered is not None:
                    on_registered(firsts[-1])
            dd.calibrate(background)
            for (s, im), first in zip(pairs, firsts, strict=True):
                done(first if first.error is not None or first.pairs
                     else run(dd.search_registered, s, im))
        else:
            for s, im in pairs:
                done(run(dd.check, s, im))
        groups = dd.groups()
        rule = dd.registry.decision_rule()
    return DedupReport(groups, items, rule)


def _as_item(x: Any) -> tuple[str | None, Any]:
    if isinstance(x, tuple) and len(x) == 2:
        return (None if x[0] is None else str(x[0]), x[1])
    return _label(x), x
