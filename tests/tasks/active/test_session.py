"""The real labelling loop: query, teach (all-or-nothing), status, resume after a crash."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import traced_peak, write_parts, write_store

from hemoembed.data.synthetic_embeddings import structured_embeddings
from hemoembed.errors import InputError, MismatchError
from hemoembed.store.store import EmbeddingStore, make_part_table
from hemoembed.tasks.active.session import HISTORY, LABELS, MODEL, LabellingSession, SessionConfig

CLASSES = [f"class{i}" for i in range(4)]


@pytest.fixture
def store(tmp_path):
    X, y = structured_embeddings(400, dim=32, n_classes=4, seed=5)
    return write_store(tmp_path / "store", X, y)


def truth(store) -> dict[str, str]:
    return dict(zip(store.paths, store.column("label")))


def fill(query: Path, answers: dict[str, str], out: Path, blank: int | None = None) -> Path:
    """The expert: fill the ``label`` column of a ``to_label.csv`` (optionally leaving row ``blank`` empty)."""
    rows = list(csv.DictReader(open(query)))
    for i, row in enumerate(rows):
        row["label"] = "" if i == blank else answers[row["path"]]
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def new_session(tmp_path, store, batch=20):
    return LabellingSession.open(tmp_path / "session", store,
                                 SessionConfig(store="store", classes=CLASSES, batch=batch, cv=3))


def test_query_teach_status_loop_improves_and_reports(tmp_path, store):
    session = new_session(tmp_path, store)
    answers = truth(store)
    first = session.query()
    rows = list(csv.DictReader(open(first)))
    assert len(rows) == 20 and list(rows[0]) == ["path", "prediction", "probability", "uncertainty", "label"]
    assert len({r["path"] for r in rows}) == 20
    session.teach(fill(first, answers, tmp_path / "l1.csv"))
    second = list(csv.DictReader(open(session.query())))
    assert not {r["path"] for r in second} & {r["path"] for r in rows}  # never asks twice
    probs = [float(r["probability"]) for r in second]
    unc = [float(r["uncertainty"]) for r in second]
    assert all(r["prediction"] in CLASSES for r in second)
    assert np.allclose(np.add(probs, unc), 1.0, atol=1e-3) and unc == sorted(unc, reverse=True)
    event = session.teach(fill(tmp_path / "session" / "to_label.csv", answers, tmp_path / "l2.csv"))
    assert event["added"] == 20 and event["n_labels"] == 40
    assert 0.5 < event["cv_macro_f1"] <= 1.0  # (estimated on hard, actively chosen images: pessimistic)
    model = session.model()["model"]
    accuracy = np.mean(model.predict(session._features()) == np.asarray(store.column("label")))
    assert accuracy > 0.9

    reopened = LabellingSession.open(tmp_path / "session", store)
    status = reopened.status()
    assert status["n_labelled"] == 40 and status["n_unlabelled"] == 360 and status["teach_rounds"] == 2
    assert sum(status["per_class"].values()) == 40
    assert status["cv_macro_f1"] == pytest.approx(event["cv_macro_f1"])
    assert reopened.labels() == {p: answers[p] for p in reopened.labels()}


def test_bad_label_files_teach_nothing(tmp_path, store):
    session = new_session(tmp_path, store)
    answers = truth(store)
    query = session.query()
    good = fill(query, answers, tmp_path / "good.csv")
    session.teach(good)
    before = (tmp_path / "session" / LABELS).read_bytes()
    query = session.query()

    empty = fill(query, answers, tmp_path / "empty.csv", blank=3)
    with pytest.raises(InputError, match=r"empty.csv:5: empty 'label'"):
        session.teach(empty)
    text = fill(query, answers, tmp_path / "unknown.csv").read_text()
    (tmp_path / "unknown_class.csv").write_text(text.replace(",class1\n", ",platelet\n", 1))
    with pytest.raises(InputError, match="'platelet'.*not one of the session's classes"):
        session.teach(tmp_path / "unknown_class.csv")
    (tmp_path / "unknown_path.csv").write_text(text + "nowhere/img.png,,,,class0\n")
    with pytest.raises(InputError, match="'nowhere/img.png' is not in the store"):
        session.teach(tmp_path / "unknown_path.csv")
    (tmp_path / "nolabel.csv").write_text("path,guess\nclass0/img_0000.png,class0\n")
    with pytest.raises(InputError, match="no 'label' column"):
        session.teach(tmp_path / "nolabel.csv")
    assert (tmp_path / "session" / LABELS).read_bytes() == before  # nothing ingested partially
    assert len(session.history()) == 1
    fill(query, answers, query)  # the expert filled the query in place but has not taught it yet
    with pytest.raises(InputError, match="not taught yet"):
        session.query()


def taught_once(tmp_path, store):
    """A session after one query-and-teach round of 20 correct labels, and the expert's answers."""
    session = new_session(tmp_path, store)
    answers = truth(store)
    session.teach(fill(session.query(), answers, tmp_path / "l1.csv"))
    return session, answers


def test_crash_after_labels_saved_loses_nothing_and_resumes(tmp_path, store, monkeypatch):
    session, answers = taught_once(tmp_path, store)
    model_before = (tmp_path / "session" / MODEL).read_bytes()
    labelled = fill(session.query(), answers, tmp_path / "l2.csv")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut while retraining")

    monkeypatch.setattr(LabellingSession, "_retrain", crash)
    with pytest.raises(KeyboardInterrupt):
        session.teach(labelled)
    monkeypatch.undo()
    assert (tmp_path / "session" / MODEL).read_bytes() == model_before  # stale model, labels already saved

    assert len(json.loads((tmp_path / "session" / HISTORY).read_text())) == 1  # killed before its entry
    resumed = LabellingSession.open(tmp_path / "session", store)
    assert len(resumed.labels()) == 40  # the 20 new labels survived the crash
    history = resumed.history()  # ... and the killed teach is recorded on reopening, once
    assert [e["n_labels"] for e in history] == [20, 40] and history[1]["recovered"] and history[1]["added"] == 20
    assert len(LabellingSession.open(tmp_path / "session", store).history()) == 2
    status = resumed.status()  # notices the stale model and retrains on all 40
    assert status["n_labelled"] == 40 and status["cv_macro_f1"] is not None
    assert (tmp_path / "session" / MODEL).read_bytes() != model_before
    event = resumed.teach(labelled)  # teaching the same file again is harmless
    assert event["added"] == 0 and event["relabelled"] == 0 and event["n_labels"] == 40


def test_crash_while_writing_labels_keeps_the_old_file(tmp_path, store, monkeypatch):
    import hemoembed.tasks.active.session as session_module

    session, answers = taught_once(tmp_path, store)
    before = (tmp_path / "session" / LABELS).read_text()
    labelled = fill(session.query(), answers, tmp_path / "l2.csv")
    real_write = session_module.atomic_write_text

    def dying_write(path, text):  # the process dies half-way through writing the temporary file
        tmp = Path(path).with_name(f".{Path(path).name}.tmp-crash")
        tmp.write_text(text[: len(text) // 2])
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(session_module, "atomic_write_text", dying_write)
    with pytest.raises(KeyboardInterrupt):
        session.teach(labelled)
    monkeypatch.setattr(session_module, "atomic_write_text", real_write)
    resumed = LabellingSession.open(tmp_path / "session", store)
    assert (tmp_path / "session" / LABELS).read_text() == before and len(resumed.labels()) == 20
    assert resumed.teach(labelled)["n_labels"] == 40  # rerun the same teach: complete


def test_session_refuses_other_store_and_needs_classes(tmp_path, store):
    with pytest.raises(InputError, match="--classes"):
        LabellingSession.open(tmp_path / "s", store)
    new_session(tmp_path, store)
    X, y = structured_embeddings(50, dim=32, n_classes=4, seed=1)
    other = write_store(tmp_path / "other", X, y, fingerprint="e" * 64)
    with pytest.raises(MismatchError, match="fingerprint"):
        LabellingSession.open(tmp_path / "session", other)
    saved = json.loads((tmp_path / "session" / "session.json").read_text())
    assert saved["classes"] == CLASSES and saved["store_fingerprint"] == "f" * 64


def test_options_other_than_the_sessions_own_are_refused_not_ignored(tmp_path, store):
    session = new_session(tmp_path, store)
    session.check_settings({"classes": tuple(CLASSES), "C": 1.0, "strategy": "uncertainty", "column": "label",
                            "seed": 0})
    for asked, shown in (({"C": 3.0}, "--C 3 differs from the 1 "), ({"classes": ["class0", "x"]},
                         "--classes class0,x differs from the class0,class1,class2,class3 "),
                         ({"strategy": "random"}, "--strategy random differs from the uncertainty ")):
        with pytest.raises(InputError, match=shown):
            LabellingSession.open(tmp_path / "session", store).check_settings(asked)


def test_teach_labels_from_a_mapping_new_class_and_a_growing_store(tmp_path, store):
    """What ``hemoembed serve`` relies on: teach a mapping, add a class later, predict vectors of a store
    that grew after the start with the standardiser fixed at the start."""
    session = new_session(tmp_path, store)
    answers = truth(store)
    first = dict(list(answers.items())[:60])
    with pytest.raises(InputError, match="'platelet'.*not one of the session's classes"):
        session.teach_labels({**first, store.paths[70]: "platelet"}, "review app")
    assert session.labels() == {}  # all-or-nothing
    event = session.teach_labels(first, "review app")
    assert event["added"] == 60 and event["file"] == "review app"
    classes, proba = session.predict_proba(store.embeddings())
    assert classes == CLASSES and proba.shape == (400, 4) and np.allclose(proba.sum(axis=1), 1.0)
    accuracy = np.mean(np.asarray(classes)[proba.argmax(axis=1)] == np.asarray(store.column("label")))
    assert accuracy > 0.85

    with pytest.raises(InputError, match="already exists"):
        session.add_class("class1")
    with pytest.raises(InputError, match="non-empty"):
        session.add_class(" ")
    session.add_class("smudge")
    # the store grows (new cells): the new class is taught on five of them; old features do not move
    mean, scale = session.standardiser()
    X_new = structured_embeddings(5, dim=32, n_classes=2, seed=9)[0][:, ::-1] * 3.0  # far from the others
    new_paths = [f"new/img_{i}.png" for i in range(5)]
    store.append(make_part_table(new_paths, ["1" * 64] * 5, [32] * 5, [32] * 5, X_new, {"label": ["new"] * 5}))
    grown = EmbeddingStore.open(store.directory)  # the same store, grown (the review app appends to it)
    reopened = LabellingSession.open(tmp_path / "session", grown)
    assert reopened.config.classes == [*CLASSES, "smudge"]
    np.testing.assert_array_equal(reopened.standardiser()[0], mean)
    event = reopened.teach_labels(dict.fromkeys(new_paths, "smudge"), "review app")
    assert event["added"] == 5 and event["n_labels"] == 65
    classes, proba = reopened.predict_proba(X_new)
    assert classes[-1] == "smudge" and (proba.argmax(axis=1) == 4).all()
    assert len(reopened.history()) == 2


def test_a_new_class_name_is_printable_and_not_another_in_other_case(tmp_path, store):
    """The review app's "new class" action passes a reviewer's text here: control characters and a name that
    differs from a class only in case are refused; the classes stay as they were."""
    session = new_session(tmp_path, store)
    for name in ("smudge\x00", "\u202esmudge", "smudge\x1b[31m"):
        with pytest.raises(InputError, match="printable"):
            session.add_class(name)
    with pytest.raises(InputError, match="'CLASS1' already exists as 'class1'"):
        session.add_class("CLASS1")
    assert session.config.classes == CLASSES
    session.add_class("smudge cell")
    assert LabellingSession.open(tmp_path / "session", store).config.classes == [*CLASSES, "smudge cell"]


def test_a_session_belongs_to_its_store_not_only_to_its_encoder(tmp_path, store):
    """Another store of the same encoder is refused (it once printed "22 of 13 images labelled" and --teach
    wrote its paths into labels.csv); a session from before store ids binds to its own store on opening."""
    session, answers = taught_once(tmp_path, store)
    before = {p.name: p.read_bytes() for p in (tmp_path / "session").iterdir()}
    X, y = structured_embeddings(13, dim=32, n_classes=4, seed=2)
    other = write_store(tmp_path / "other", X, y)  # same fingerprint, other cells
    assert other.fingerprint == store.fingerprint
    with pytest.raises(MismatchError, match="session belongs to store .* not to .*other"):
        LabellingSession.open(tmp_path / "session", other)
    assert {p.name: p.read_bytes() for p in (tmp_path / "session").iterdir()} == before
    config = json.loads((tmp_path / "session" / "session.json").read_text())
    assert config["store_id"] == store.header.store_id
    del config["store_id"]  # as written before sessions recorded their store's id
    (tmp_path / "session" / "session.json").write_text(json.dumps(config))
    with pytest.raises(MismatchError, match="20 taught path\\(s\\) are not in"):
        LabellingSession.open(tmp_path / "session", other)
    assert LabellingSession.open(tmp_path / "session", store).status()["n_labelled"] == 20
    assert json.loads((tmp_path / "session" / "session.json").read_text())["store_id"] == store.header.store_id


def test_missing_value_markers_are_no_label(tmp_path, store):
    """A filled query with NaN (a spreadsheet's empty cell) is an empty label, not a class to refuse."""
    session = new_session(tmp_path, store)
    query = list(csv.DictReader(open(session.query())))
    (tmp_path / "nan.csv").write_text(f"path,label\n{query[0]['path']},NaN\n")
    with pytest.raises(InputError, match="empty 'label'"):
        session.teach(tmp_path / "nan.csv")


def test_query_holds_the_matrix_once_and_teach_reads_only_the_labelled_rows(tmp_path, monkeypatch):
    """At a million rows a query held the store's matrix, a standardised copy and a copy of the unlabelled
    rows (3 × 4.9 GB) and a teach the first two: now a query holds one standardised matrix of its own (the
    unlabelled rows scored in it a block at a time) and a teach reads the labelled rows only; same query."""
    import tracemalloc

    import hemoembed.tasks.active.estimator as active
    from hemoembed.tasks.active import standardise

    monkeypatch.setattr(active, "SCORE_ROWS", 500)
    X, y = structured_embeddings(12000, dim=256, n_classes=4, seed=3)
    big = write_store(tmp_path / "big", X[:1000].astype(np.float32), y[:1000])
    for start in range(1000, 12000, 1000):  # parts of 1,000 rows, as a store is written (reads hold one part)
        paths = [f"{c}/img_{i:05d}.png" for i, c in enumerate(y[start:start + 1000], start)]
        big.append(make_part_table(paths, ["0" * 64] * 1000, [32] * 1000, [32] * 1000,
                                   X[start:start + 1000].astype(np.float32), {"label": list(y[start:start + 1000])}))
    session = new_session(tmp_path, EmbeddingStore.open(tmp_path / "big"), batch=90)
    answers = dict(zip(EmbeddingStore.open(tmp_path / "big").paths, y))
    session.teach_labels(dict(list(answers.items())[:200]))
    session.query()  # imports (modAL, scikit-learn: megabytes) before memory is traced
    nbytes = X.shape[0] * X.shape[1] * 4

    def peak(action) -> int:
        """Peak traced memory of ``action`` on the session as a new process opens it."""
        opened = LabellingSession.open(tmp_path / "session", EmbeddingStore.open(tmp_path / "big"))
        tracemalloc.start()
        try:
            action(opened)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    assert peak(lambda s: s.query()) < 1.5 * nbytes  # before: 3 matrices
    rows = list(csv.DictReader(open(tmp_path / "session" / "to_label.csv")))
    store = EmbeddingStore.open(tmp_path / "big")
    labels, model = session.labels(), session.model()["model"]
    pool = np.array([i for i, p in enumerate(store.paths) if p not in labels])
    chosen, proba = session.rank(model, standardise(store.embeddings(), *session.standardiser())[pool], 90, 200)
    assert [r["path"] for r in rows] == [store.paths[pool[i]] for i in chosen]  # as the whole copy ranks them
    assert [r["probability"] for r in rows] == [f"{p.max():.4f}" for p in proba]
    fill(tmp_path / "session" / "to_label.csv", answers, tmp_path / "filled.csv")
    assert peak(lambda s: s.teach(tmp_path / "filled.csv")) < 0.5 * nbytes  # before: 2 matrices


@pytest.mark.parametrize("one_class", [0, 300], ids=["no-labels", "labels-of-one-class"])
def test_cold_query_copies_no_unlabelled_rows_and_picks_the_same_rows(tmp_path, monkeypatch, one_class):
    """A query before a model can rank (no labels, or labels of one class only) k-means the unlabelled rows.
    It copied them beside the session's standardised matrix (2 matrices; 9.8 GB at 1M rows); now k-means
    reads that matrix itself, the unlabelled rows moved to its front and back after. Same rows as k-means
    over a copy; the matrix is left as it was."""
    import hemoembed.tasks.active.estimator as active
    from hemoembed.tasks.active import standardise
    from hemoembed.tasks.active.strategies import initial_indices

    monkeypatch.setattr(active, "SCORE_ROWS", 500)  # blocks much smaller than the matrix, as at scale
    X, y = structured_embeddings(24000, dim=256, n_classes=4, seed=4)
    store = write_parts(tmp_path / "big", X, y)
    session = new_session(tmp_path, store, batch=30)
    taught = [i for i in range(0, 24000, 7) if y[i] == y[0]][:one_class]  # scattered through the matrix
    if taught:
        session.teach_labels({store.paths[i]: y[0] for i in taught})
    opened = LabellingSession.open(tmp_path / "session", EmbeddingStore.open(tmp_path / "big"))
    initial_indices(np.zeros((200, 4), np.float32), None, 2, "kmeans", 0)  # imports outside the trace
    peak, _ = traced_peak(opened.query)
    assert peak < 2.0 * X.shape[0] * X.shape[1] * 4  # before: 2.5 (the matrix, a copy, k-means' buffers); now 1.5
    full = standardise(store.embeddings(), *opened.standardiser())
    assert np.array_equal(opened._features(), full)  # restored row for row
    pool = np.setdiff1d(np.arange(len(full)), taught)
    chosen = initial_indices(full[pool], None, 30, "kmeans", 0)
    rows = list(csv.DictReader(open(tmp_path / "session" / "to_label.csv")))
    assert [r["path"] for r in rows] == [store.paths[pool[i]] for i in chosen]


def test_rows_in_front_moves_rows_and_restores_the_matrix(monkeypatch):
    """Any rows (ascending), blocks of any size: the view is exactly those rows; afterwards, even after an
    error inside the block, the matrix is what it was."""
    import hemoembed.tasks.active.estimator as active
    from hemoembed.tasks.active.estimator import rows_in_front

    monkeypatch.setattr(active, "SCORE_ROWS", 3)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4)).astype(np.float32)
    for rows in (np.arange(50), np.arange(1, 50), np.sort(rng.choice(50, 17, replace=False)), np.array([49]),
                 np.zeros(0, np.int64)):
        matrix = X.copy()
        with rows_in_front(matrix, rows) as front:
            assert np.array_equal(front, X[rows]) and (len(rows) == 0 or np.shares_memory(front, matrix))
        assert np.array_equal(matrix, X)
    with pytest.raises(RuntimeError), rows_in_front(matrix, np.array([2, 5, 40])):
        raise RuntimeError("k-means failed")
    assert np.array_equal(matrix, X)


def test_standardiser_over_blocks_is_the_matrix_standardiser_byte_for_byte(monkeypatch):
    """Blocks of any sizes (the review app's parts; float16 reference rows), in ``SCORE_ROWS`` steps or not:
    the same mean and scale, bit for bit, as over the concatenated matrix."""
    import hemoembed.tasks.active.estimator as active
    from hemoembed.tasks.active import pool_standardiser

    rng = np.random.default_rng(1)
    X = (rng.standard_normal((2500, 48)) * rng.uniform(0.01, 50, 48) + rng.uniform(-20, 20, 48)).astype(np.float32)
    X[:, 3] = 1.5  # a constant feature (scale 1)
    for score_rows in (8192, 500, 7):
        monkeypatch.setattr(active, "SCORE_ROWS", score_rows)
        expected = pool_standardiser(X)
        for cuts in ([1000, 1700], [1, 2, 3, 499, 500, 501], list(range(0, 2500, 333))):
            parts = np.split(X, cuts)
            for got, want in zip(pool_standardiser(lambda parts=parts: iter(parts)), expected):
                assert got.tobytes() == want.tobytes()
        half = X.astype(np.float16)
        mixed = [half[:1200], half[1200:].astype(np.float32)]
        whole = pool_standardiser(np.concatenate(mixed))
        for got, want in zip(pool_standardiser(lambda mixed=mixed: iter(mixed)), whole):
            assert got.tobytes() == want.tobytes()


class _Pool:
    """A store with ``embeddings()`` only (its read-only matrix, kept by the store), as the review app's pool
    was before it read rows from each of its stores."""

    def __init__(self, store) -> None:
        self.fingerprint, self.directory, self.paths = store.fingerprint, store.directory, store.paths
        self.matrix = store.embeddings()  # read once, cached, as the reference store keeps it

    def embeddings(self) -> np.ndarray:
        return self.matrix


def test_a_pool_without_row_reads_is_not_copied_to_start_or_teach(tmp_path, monkeypatch):
    """A pool with ``embeddings()`` only: starting a session copied the whole matrix for the
    standardiser, and a teach standardised a copy of every row to fit on the labelled ones; now both read
    the pool's matrix without copying it (the labelled rows only are copied). Same model as before."""
    import hemoembed.tasks.active.estimator as active
    from hemoembed.tasks.active import standardise
    from hemoembed.tasks.active.estimator import IncrementalLinearSVM

    monkeypatch.setattr(active, "SCORE_ROWS", 500)  # blocks much smaller than the matrix, as at scale
    X, y = structured_embeddings(6000, dim=512, n_classes=4, seed=6)
    pool = _Pool(write_parts(tmp_path / "big", X, y))
    answers = dict(zip(pool.paths, y))
    nbytes = X.shape[0] * X.shape[1] * 4
    IncrementalLinearSVM(classes=CLASSES).fit(np.eye(4, dtype=np.float32), np.array(CLASSES))  # imports

    start, session = traced_peak(lambda: new_session(tmp_path, pool, batch=30))
    assert start < 0.5 * nbytes  # before: a copy of the matrix
    taught = dict(list(answers.items())[:300])
    teach, _ = traced_peak(lambda: session.teach_labels(taught))
    assert teach < 0.5 * nbytes  # before: a standardised copy of every row
    mean, scale = session.standardiser()
    rows = np.array([pool.paths.index(p) for p in taught])
    expected = IncrementalLinearSVM(classes=CLASSES).fit(standardise(X.astype(np.float32), mean, scale)[rows],
                                                          np.array(list(taught.values())))
    for key, value in expected.state().items():
        np.testing.assert_array_equal(session.model()["model"].state()[key], value)
