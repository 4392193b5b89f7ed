"""A tiny reference for the review app: synthetic cells, a random 32-px encoder, store, SVM and t-SNE map."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import built_once

CLASSES = ("basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil")


@dataclass
class Built:
    root: Path
    cells: Path
    encoder: Path
    store: Path
    svm: Path
    map: Path


@pytest.fixture(scope="session")
def reference_files(tmp_path_factory) -> Built:
    """Built once per test session for all workers (about 20 s on 2 cores): every app test reads it, none
    writes it."""
    root = built_once(tmp_path_factory, "review-reference", build_reference)
    return Built(root, root / "cells", root / "encoder.keras", root / "store", root / "svm", root / "map")


def build_reference(root: Path) -> None:
    import keras

    from hemoembed.data.manifest import load_manifest
    from hemoembed.data.preprocess import PreprocessingRecord
    from hemoembed.data.synthetic import make_synthetic_dataset
    from hemoembed.explain.tsne import TsneConfig, TsneMap
    from hemoembed.model.encoder import build_encoder, save_encoder
    from hemoembed.store.embed import EmbedConfig, run_embed
    from hemoembed.store.store import EmbeddingStore
    from hemoembed.tasks.svm import FitSVMConfig
    from hemoembed.tasks.svm import run as fit_svm

    make_synthetic_dataset(root / "cells", n_per_class=16, sites=1, size=48, seed=0)
    keras.utils.set_random_seed(0)
    record = PreprocessingRecord(image_size=32)
    model = build_encoder(record, weights="none")
    fp = save_encoder(model, root / "encoder.keras")
    manifest = load_manifest(root / "cells" / "manifest.csv")
    store = EmbeddingStore.create(root / "store", fp, record, int(model.output_shape[-1]))
    run_embed(model, record, store, manifest, batch_size=32,
              config=EmbedConfig(encoder=str(root / "encoder.keras"), images=str(manifest.source),
                                 image_root=str(manifest.root)))
    fit_svm(FitSVMConfig(store=str(root / "store"), labels=[str(root / "cells" / "manifest.csv")],
                         columns=["label"], cv=0, n_bootstrap=10, test_fraction=0.2), root / "svm")
    store = EmbeddingStore.open(root / "store")
    TsneMap.fit(store.embeddings(), store.paths, TsneConfig(perplexity=5, n_iter=100, early_exaggeration_iter=50,
                                                             n_jobs=1),
                source={"store": str(root / "store"), "fingerprint": fp}).save(root / "map")


@pytest.fixture(scope="session")
def loaded(reference_files):
    """The reference opened and the encoder loaded once (the expensive part of starting a server)."""
    from hemoembed.app.reference import load_store_encoder, open_reference

    reference = open_reference(reference_files.store, reference_files.svm, reference_files.map)
    model, record, _ = load_store_encoder(reference)
    return reference, model, record


@pytest.fixture
def make_engine(loaded, tmp_path):
    """Build (and afterwards stop) engines on a data folder; several calls share it (a restart)."""
    from hemoembed.app.engine import Engine
    from hemoembed.app.intake import Limits

    engines = []

    def build(data: Path | None = None, limits: Limits | None = None, start: bool = True, **kwargs):
        reference, model, record = loaded
        engine = Engine(reference, model, record, data or tmp_path / "data", limits=limits or Limits(),
                        retrain_cv=kwargs.pop("retrain_cv", 2), **kwargs)
        if start:
            engine.start()
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        if not engine._stop.is_set():
            engine.stop()


@pytest.fixture
def client_for(make_engine):
    """A FastAPI TestClient over a fresh engine (``token``, ``label_studio_roots`` optional)."""
    from fastapi.testclient import TestClient

    from hemoembed.app.server import create_app

    def build(token: str | None = None, label_studio_roots=(), **kwargs):
        engine = make_engine(**kwargs)
        app = create_app(engine, token=token, label_studio_roots=label_studio_roots)
        return TestClient(app, base_url="http://127.0.0.1"), engine

    return build


@pytest.fixture
def cell_files(reference_files):
    """``cell_files(n, start)``: ``n`` distinct synthetic cell images (mixed classes) as (name, bytes)."""
    files = sorted(reference_files.cells.glob("*/*.png"))

    def pick(n: int, start: int = 0) -> list[tuple[str, bytes]]:
        chosen = [files[(start + i * 7) % len(files)] for i in range(n)]
        assert len(set(chosen)) == n
        return [(f"{p.parent.name}_{p.name}", p.read_bytes()) for p in chosen]

    return pick
