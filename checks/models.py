"""The model-kind contract (`ml_processing.sdk.model`), checked on one kind.

* garbage is refused without being executed: for each format the kind accepts, ``check`` answers random
  bytes, broken JSON, JSON of the wrong shape, a pickle that would write a file when loaded and a skops
  file holding a type outside scikit-learn with `BadRequest`, and no file is written;
* a round trip works on a small model of the kind: ``check`` describes it, ``compile`` derives its files,
  ``load`` gives a `Predictor` whose task, features and classes are the description's, and ``predict``
  answers one row and 200 rows with the right shapes (labels among the classes, probabilities in [0, 1]
  summing to 1, finite values), rows with NaN too where the predictor takes them;
* where a predictor has two paths (a fast ONNX graph beside the native library), the rows both paths
  computed agree: labels equal, probabilities within 1e-5.

The small model is the kind's own when it offers one (an optional ``example()`` method returning
``(artifact bytes, format)``); otherwise the checks train one for the formats they know (xgboost JSON and
UBJ, scikit-learn through skops). A kind neither offers nor the checks can train for (one whose models
only the service writes, or one built of other models) gets the garbage check only: `check_model_kind`
returns a `KindReport` saying what ran, so a test can insist on the round trip.
"""

from __future__ import annotations

import contextlib
import hashlib
import pickle
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ml_processing.core.errors import BadRequest
from ml_processing.sdk.model import CLASSIFICATION, REGRESSION, Described, ModelKind, Prediction, Predictor
from ml_processing.sdk.synthetic import SEED

__all__ = ["Example", "KindReport", "Tripwire", "check_model_kind", "check_refuses_garbage", "check_round_trip",
           "examples"]

ROWS = 200
OFFERED = "offered by the kind"  # the origin of an example the kind gives itself


@dataclass(frozen=True)
class Example:
    """A small artifact of a kind, and where it came from (`OFFERED`, or what trained it)."""

    artifact: bytes
    fmt: str
    origin: str


@dataclass
class KindReport:
    """What `check_model_kind` ran on one kind: the formats refused garbage was tried in, the examples that
    made the round trip (``"ubj: trained by the checks (xgboost)"``), the prediction paths compared with
    each other, and why anything did not run."""

    kind: str
    garbage_formats: list[str] = field(default_factory=list)
    round_trips: list[str] = field(default_factory=list)
    paths_compared: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_model_kind(kind: ModelKind, directory: Path | None = None) -> KindReport:
    """Every check of this module; version folders are written under `directory` (a temporary folder by
    default)."""
    with _folder(directory) as root:
        report = KindReport(kind.name, garbage_formats=check_refuses_garbage(kind, root))
        candidates = examples(kind)
        if not candidates:
            report.notes.append(f"{kind.name} offers no example() and accepts no format the checks can train "
                                f"({', '.join(kind.formats) or 'none'}): no round trip")
        refused = []
        for example in candidates:
            try:
                described = kind.check(example.artifact, example.fmt)
            except BadRequest as exc:
                if example.origin == OFFERED:
                    raise AssertionError(f"{kind.name}: check refused its own example: {exc.message}") from None
                refused.append(f"{example.fmt} ({example.origin}): {exc.message:.80}")
                continue
            if described.members:
                report.notes.append(f"{kind.name}: {example.fmt} is built of other models: no round trip")
                continue
            paths = check_round_trip(kind, example, root / f"{len(report.round_trips) + 1}", described)
            report.round_trips.append(f"{example.fmt}: {example.origin}")
            report.paths_compared = sorted({*report.paths_compared, *paths})
        if refused and not report.round_trips:
            report.notes.append(f"{kind.name} took none of the models the checks trained: {'; '.join(refused)}")
        return report


@contextlib.contextmanager
def _folder(directory: Path | None) -> Iterator[Path]:
    if directory is not None:
        yield Path(directory)
        return
    with tempfile.TemporaryDirectory(prefix="mlp-checks-") as tmp:
        yield Path(tmp)


# -- garbage --------------------------------------------------------------------------------------------


class Tripwire:
    """An object whose loading writes the file `path`: proof that an artifact was executed.

    Pickled, it is a call of ``Path.touch``; saved with skops, its ``__setstate__`` does the same."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return Path.touch, (Path(self.path),)

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        Path(state["path"]).touch()


def _skops_tripwire(path: str) -> bytes | None:
    try:
        import skops.io as sio
    except ImportError:  # skops is not installed: no skops case
        return None
    return bytes(sio.dumps(Tripwire(path)))


def _garbage(sentinel: Path) -> list[tuple[str, bytes]]:
    cases = [
        ("an empty artifact", b""),
        ("random bytes", np.random.default_rng(SEED).integers(0, 256, 512, dtype=np.uint8).tobytes()),
        ("truncated JSON", b'{"learner": {"gradient_booster": '),
        ("a JSON list", b"[1, 2, 3]"),
        ("JSON null", b"null"),
        ("a pickle that writes a file when loaded", pickle.dumps(Tripwire(str(sentinel)))),
    ]
    skops = _skops_tripwire(str(sentinel))
    if skops is not None:
        cases.append(("a skops file holding a type outside scikit-learn", skops))
    return cases


def check_refuses_garbage(kind: ModelKind, directory: Path | None = None) -> list[str]:
    """``check`` refuses each piece of garbage with `BadRequest` in every format the kind accepts, and
    executes none of it (an empty artifact included). Returns the formats tried."""
    formats = list(kind.formats) or [""]
    with _folder(directory) as root:
        sentinel = root / f"executed-by-{kind.name}"
        for fmt in formats:
            for what, data in _garbage(sentinel):
                where = f"{kind.name}: check({what}, format {fmt!r})"
                try:
                    described = kind.check(data, fmt)
                except BadRequest:
                    pass
                except Exception as exc:
                    raise AssertionError(f"{where} raised {type(exc).__name__}: {exc!s:.200}; a refused artifact "
                                         "is a BadRequest") from exc
                else:
                    raise AssertionError(f"{where} accepted it as {described!r:.200}")
                assert not sentinel.exists(), f"{where} EXECUTED the artifact: it wrote {sentinel}"
    return formats


# -- the round trip -------------------------------------------------------------------------------------


def _training_set() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(300, 4))
    return x, (x[:, 0] + 0.5 * x[:, 1] - 0.25 * x[:, 2] > 0).astype(np.int64)


def _xgboost(fmt: str) -> bytes:
    import xgboost as xgb

    x, y = _training_set()
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1, "seed": 0},
                        xgb.DMatrix(x, label=y), num_boost_round=8)
    return bytes(booster.save_raw(raw_format=fmt))


def _sklearn(fmt: str) -> bytes:
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier

    x, y = _training_set()
    return bytes(sio.dumps(RandomForestClassifier(n_estimators=8, max_depth=4, random_state=0, n_jobs=1).fit(x, y)))


#: format -> (library, how the checks train a small model saved in that format)
TRAINERS: dict[str, tuple[str, Callable[[str], bytes]]] = {
    "json": ("xgboost", _xgboost), "ubj": ("xgboost", _xgboost), "skops": ("scikit-learn", _sklearn)}


def examples(kind: ModelKind) -> list[Example]:
    """The kind's own example if it offers one, else a model the checks train for each format it accepts."""
    offer = getattr(kind, "example", None)
    offered = offer() if callable(offer) else None
    if offered is not None:
        artifact, fmt = offered
        return [Example(bytes(artifact), fmt, OFFERED)]
    out = []
    for fmt in kind.formats:
        if fmt in TRAINERS:
            library, train = TRAINERS[fmt]
            out.append(Example(train(fmt), fmt, f"trained by the checks ({library})"))
    return out


def _write(kind: ModelKind, example: Example, folder: Path, described: Described) -> dict[str, Any]:
    """A version folder as the service writes one: the artifact, the files ``compile`` derives, a manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    artifact = kind.artifact_name(example.fmt)
    (folder / artifact).write_bytes(example.artifact)
    manifest: dict[str, Any] = {
        "kind": kind.name, "format": example.fmt, "artifact": artifact, "task": described.task,
        "classes": described.classes, "n_features": described.n_features,
        "features": [f"f{i}" for i in range(described.n_features)], "details": described.details,
        "files": {artifact: ""}}
    derived = kind.compile(folder, manifest)
    assert isinstance(derived, Mapping), f"{kind.name}: compile returned {derived!r:.100}, not a map of files"
    for name, data in derived.items():
        assert name != artifact and "/" not in name, f"{kind.name}: compile derived a file named {name!r}"
        assert isinstance(data, bytes), f"{kind.name}: compile derived {name!r} as {type(data).__name__}"
        (folder / name).write_bytes(data)
    manifest["files"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}
    return manifest


def _shape(kind: ModelKind, predictor: Predictor, prediction: Prediction, rows: int, what: str) -> None:
    where = f"{kind.name}: predict({what})"
    assert isinstance(prediction, Prediction), f"{where} returned {type(prediction).__name__}, not a Prediction"
    values = np.asarray(prediction.values)
    assert values.shape == (rows,), f"{where}: values of shape {values.shape}, not ({rows},)"
    declared = predictor.paths()
    assert set(prediction.path.split("+")) <= set(declared), f"{where}: path {prediction.path!r} not in {declared}"
    if predictor.task == REGRESSION:
        assert np.isfinite(values.astype(np.float64)).all(), f"{where}: values are not all finite"
        return
    classes = list(predictor.classes or [])
    assert set(values.tolist()) <= set(classes), f"{where}: labels {sorted(set(values.tolist()))} not in {classes}"
    if prediction.proba is not None:
        proba = np.asarray(prediction.proba, dtype=np.float64)
        assert proba.shape == (rows, len(classes)), f"{where}: probabilities of shape {proba.shape}"
        assert ((proba >= -1e-9) & (proba <= 1 + 1e-9)).all(), f"{where}: probabilities outside [0, 1]"
        assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5), f"{where}: probabilities do not sum to 1"


def _agree(kind: ModelKind, a: Prediction, b: Prediction, i: int) -> None:
    where = f"{kind.name}: row {i} by path {a.path!r} and by path {b.path!r}"
    if a.proba is not None and b.proba is not None:
        pa, pb = np.asarray(a.proba, dtype=np.float64), np.asarray(b.proba, dtype=np.float64)
        assert np.allclose(pa, pb, atol=1e-5), f"{where}: probabilities {pa.tolist()} and {pb.tolist()} differ"
        top = np.sort(pa.reshape(-1))
        if top.size > 1 and top[-1] - top[-2] < 1e-4:
            return  # a near tie: float32 rounding may pick either label
    va, vb = np.asarray(a.values), np.asarray(b.values)
    if va.dtype.kind == "f" and vb.dtype.kind == "f":
        assert np.allclose(va, vb, rtol=1e-5, atol=1e-6), f"{where}: values {va.tolist()} and {vb.tolist()} differ"
    else:
        assert va.tolist() == vb.tolist(), f"{where}: labels {va.tolist()} and {vb.tolist()} differ"


def check_round_trip(kind: ModelKind, example: Example, folder: Path, described: Described | None = None) -> list[str]:
    """Check, compile, load and predict `example`; returns the paths compared with each other (none when the
    predictor answered every request through one path)."""
    described = described if described is not None else kind.check(example.artifact, example.fmt)
    assert isinstance(described, Described), f"{kind.name}: check returned {described!r:.100}, not a Described"
    assert described.task in (CLASSIFICATION, REGRESSION), f"{kind.name}: task {described.task!r}"
    assert described.n_features >= 1, f"{kind.name}: described {described.n_features} features"
    manifest = _write(kind, example, folder, described)
    predictor = kind.load(folder, manifest, {})
    assert isinstance(predictor, Predictor), f"{kind.name}: load returned {type(predictor).__name__}"
    assert (predictor.task, predictor.n_features) == (described.task, described.n_features), (
        f"{kind.name}: loaded a {predictor.task} on {predictor.n_features} features; check described a "
        f"{described.task} on {described.n_features}")
    if described.task == CLASSIFICATION:
        assert list(predictor.classes or []) == list(described.classes or []), (
            f"{kind.name}: loaded classes {predictor.classes}, described {described.classes}")
    rows = np.random.default_rng(SEED).normal(size=(ROWS, described.n_features))
    many = predictor.predict(np.ascontiguousarray(rows))
    _shape(kind, predictor, many, ROWS, f"{ROWS} rows")
    singles = [predictor.predict(np.ascontiguousarray(rows[i:i + 1])) for i in range(16)]
    for single in singles:
        _shape(kind, predictor, single, 1, "one row")
    if predictor.allows_nan:
        gappy = rows[:8].copy()
        gappy[::2, 0] = np.nan
        _shape(kind, predictor, predictor.predict(gappy), 8, "rows with NaN")
    compared: set[str] = set()
    for i, single in enumerate(singles):
        row = Prediction(np.asarray(many.values)[i:i + 1], None if many.proba is None else many.proba[i:i + 1],
                         many.path)
        if single.path != row.path:
            _agree(kind, single, row, i)
            compared |= {single.path, row.path}
    return sorted(compared)
