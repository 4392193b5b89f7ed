"""A mistyped path, a wrong model folder or a bad option value is refused before TensorFlow (and, where the
check needs none, scikit-learn) loads: the user waits a fraction of a second for the one-line error, not
the seconds of a heavy import and an encoder load. Each row runs a command in a fresh interpreter and looks
at which modules were loaded when the error was raised (timing-free)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO
from PIL import Image

STORE_FP, OTHER_FP = "a" * 64, "b" * 64
TF, SK = ("tensorflow", "keras"), ("tensorflow", "keras", "sklearn")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A store (4-d embeddings, no encoder behind it), SVM folders of it and of another store (model.json
    only), a model.json that is a list, class folders of images, a text file named .png and a placeholder encoder:
    everything a row needs to fail, built without TensorFlow or scikit-learn."""
    from hemoembed.data.preprocess import PreprocessingRecord
    from hemoembed.store.store import EmbeddingStore, make_part_table

    root = tmp_path_factory.mktemp("fail_fast")
    rng = np.random.default_rng(0)
    for i in range(8):
        target = root / "cells" / "ab"[i % 2] / f"{i}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(target)
    paths = [f"{c}/{i}.png" for i, c in enumerate("abababab")]
    store = EmbeddingStore.create(root / "store", STORE_FP, PreprocessingRecord(image_size=32), 4)
    store.append(make_part_table(paths, ["0" * 64] * 8, [40] * 8, [40] * 8, rng.normal(size=(8, 4))))
    meta = {"format": "hemoembed-svm/1", "column": "label", "classes": ["a", "b"], "solver": "liblinear", "C": 0.1,
            "calibration_folds": 5, "random_state": 0, "dim": 4, "store_fingerprint": OTHER_FP}
    (root / "svm").mkdir()
    (root / "svm" / "model.json").write_text(json.dumps(meta))
    (root / "svm_ok").mkdir()
    (root / "svm_ok" / "model.json").write_text(json.dumps({**meta, "store_fingerprint": STORE_FP}))
    (root / "svm_list").mkdir()
    (root / "svm_list" / "model.json").write_text("[]")
    (root / "text.png").write_text("not an image")
    (root / "enc.keras").write_text("never read: every row fails before the encoder loads")
    (root / "labels_other.csv").write_text("path,label\nx/none.png,a\ny/none.png,b\n")
    (root / "taken").mkdir()
    (root / "taken" / "file.txt").write_text("already here")
    return root


# (row id, argv with {w} = the world, {out} = a fresh path; words expected on stderr; modules that must not load)
ROWS = [
    ("serve: open host without token", ["serve", "--store", "{w}/store", "--model", "{w}/svm", "--host", "0.0.0.0",
                                        "--data", "{out}"], "reachable from other machines", (*SK, "fastapi")),
    ("serve: missing store", ["serve", "--store", "{w}/nope", "--model", "{w}/svm", "--data", "{out}"], "nope", SK),
    ("serve: model of another store", ["serve", "--store", "{w}/store", "--model", "{w}/svm", "--data", "{out}"],
     "was trained on store fingerprint", SK),
    ("serve: model.json a list", ["serve", "--store", "{w}/store", "--model", "{w}/svm_list", "--data", "{out}"],
     "model.json", SK),
    ("serve: missing map", ["serve", "--store", "{w}/store", "--model", "{w}/svm_ok", "--labels", "{w}/cells",
                            "--map", "{w}/nope", "--data", "{out}"], "not a t-SNE map", (*SK, "openTSNE")),
    ("tsne: missing map", ["tsne", "--map", "{w}/nope", "--query", "{w}/store", "--out", "{out}"], "not a t-SNE map",
     (*SK, "openTSNE")),
    ("tsne: --n-jobs 0", ["tsne", "{w}/store", "--n-jobs", "0", "--out", "{out}"], "--n-jobs 0", (*SK, "openTSNE")),
    ("predict: missing model", ["predict", "{w}/nope", "--store", "{w}/store", "--out", "{out}.csv"],
     "no saved SVM here", SK),
    ("predict: model of another store", ["predict", "{w}/svm", "--store", "{w}/store", "--out", "{out}.csv"],
     "was trained on store fingerprint", SK),
    ("neighbours: --image text", ["neighbours", "{w}/store", "--encoder", "{w}/enc.keras", "--image", "{w}/text.png"],
     "text.png", TF),
    ("neighbours: --image without encoder", ["neighbours", "{w}/store", "--image", "{w}/cells/a/0.png"],
     "--image needs --encoder", TF),
    ("neighbours: missing encoder", ["neighbours", "{w}/store", "--encoder", "{w}/nope.keras", "--image",
                                     "{w}/cells/a/0.png"], "encoder file not found", TF),
    ("adapt: missing source", ["adapt", "--source", "{w}/nope", "--target", "{w}/cells", "--out", "{out}"],
     "no encoder", SK),
    ("adapt: --out exists", ["adapt", "--source", "{w}/enc.keras", "--target", "{w}/cells", "--out", "{w}/taken"],
     "output folder exists", SK),
    ("adapt: missing class map", ["adapt", "--source", "{w}/enc.keras", "--target", "{w}/cells", "--class-map",
                                  "{w}/nope.csv", "--out", "{out}"], "nope.csv", SK),
    ("adapt: --lr abc", ["adapt", "--source", "{w}/enc.keras", "--target", "{w}/cells", "--lr", "abc", "--out",
                         "{out}"], "--lr", SK),
    ("probe: missing encoder", ["probe", "{w}/nope.keras", "{w}/cells"], "encoder file not found", SK),
    ("probe: unknown column", ["probe", "{w}/enc.keras", "{w}/cells", "--column", "nope"], "nope", SK),
    ("probe: labels of other images", ["probe", "{w}/enc.keras", "{w}/cells", "--labels", "{w}/labels_other.csv"],
     "labels_other.csv", SK),
    ("gradcam: missing encoder", ["gradcam", "{w}/nope.keras", "{w}/cells/a/0.png", "--against", "{w}/cells/b/1.png",
                                  "--out", "{out}"], "encoder file not found", SK),
    ("gradcam: text image", ["gradcam", "{w}/enc.keras", "{w}/text.png", "--against", "{w}/cells/b/1.png", "--out",
                             "{out}"], "text.png: not an image", SK),
    ("gradcam: damaged model", ["gradcam", "{w}/enc.keras", "{w}/cells/a/0.png", "--model", "{w}/svm_list",
                                "--class", "a", "--out", "{out}"], "model.json", SK),
]

CODE = """import sys
from hemoembed.cli import main
sys.argv = ['hemoembed', *{argv!r}]
try:
    main()
except SystemExit as stop:
    print('EXIT', stop.code)
print('LOADED', sorted(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize("name,args,words,heavy", ROWS, ids=[row[0] for row in ROWS])
def test_the_error_comes_before_the_heavy_imports(world, tmp_path, name, args, words, heavy):
    argv = [a.format(w=world, out=tmp_path / "out") for a in args]
    env = {k: v for k, v in os.environ.items() if k != "HEMOEMBED_DEBUG"}
    run = subprocess.run([sys.executable, "-c", CODE.format(argv=argv, heavy=heavy)], capture_output=True,
                         text=True, cwd=tmp_path, timeout=300,
                         env={**env, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"})
    report = f"{name}\nstdout: {run.stdout[-1500:]}\nstderr: {run.stderr[-1500:]}"
    assert "EXIT 2" in run.stdout, report
    errors = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and words in errors[0], report
    assert "LOADED []" in run.stdout, report
