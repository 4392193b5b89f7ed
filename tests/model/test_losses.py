"""Native triplet losses: parity with tensorflow-addons 0.23 (recorded fixture), mining behaviour,
gradients, mixed precision, XLA, Keras serialisation and input validation."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from hemoembed.errors import InputError
from hemoembed.model.losses import (
    ANGULAR_TIE,
    TripletHardLoss,
    TripletSemiHardLoss,
    triplet_hard_loss,
    triplet_semihard_loss,
)

HERE = Path(__file__).resolve().parents[1]  # tests/: fixtures and the parity inputs
FIXTURE = json.loads((HERE / "fixtures" / "tfa_parity.json").read_text())
_spec = importlib.util.spec_from_file_location("tfa_parity_inputs", HERE / "tfa_parity_inputs.py")
parity_inputs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(parity_inputs)

INPUT_KEYS = ("seed", "batch", "dim", "n_classes", "labels", "embeddings", "dtype")
DISTANCES = ("L2", "squared-L2", "angular")
LOSSES = {  # name -> callable(labels, embeddings, margin, distance)
    "semihard": lambda y, x, m, d: triplet_semihard_loss(y, x, margin=m, distance=d),
    "hard": lambda y, x, m, d: triplet_hard_loss(y, x, margin=m, distance=d),
    "soft": lambda y, x, m, d: triplet_hard_loss(y, x, margin=m, soft=True, distance=d),
}


def _case_id(case: dict) -> str:
    kind = "soft" if case["soft"] else case["loss"]
    shape = f"{case['batch']}x{case['dim']}"
    return f"{kind}-{case['distance']}-{shape}-{case['embeddings']}-{case['dtype']}-s{case['seed']}"


def _ours(case: dict, labels: np.ndarray, embeddings: np.ndarray, margin: float | None = None) -> tf.Tensor:
    kind = "soft" if case["soft"] else case["loss"]
    return LOSSES[kind](labels, embeddings, case["margin"] if margin is None else margin, case["distance"])


def _close(ours: float, ref: float, tol: float = 1e-5) -> bool:
    """Absolute tolerance, relative for values above 1."""
    return abs(ours - ref) <= tol * max(1.0, abs(ref))


def test_fixture_covers_the_required_cases() -> None:
    cases = FIXTURE["cases"]
    assert FIXTURE["versions"]["tensorflow_addons"] == "0.23.0"
    assert {(c["loss"], c["soft"]) for c in cases} == {("semihard", False), ("hard", False), ("hard", True)}
    assert {c["distance"] for c in cases} == set(DISTANCES)
    assert {c["margin"] for c in cases} == {0.2, 0.5, 1.0}
    assert {c["embeddings"] for c in cases} == {"normal", "l2", "grid"}
    assert {(c["batch"], c["dim"]) for c in cases if c["labels"] == "two_view"} >= {(100, 64), (200, 1280)}
    assert any(c["tfa_special"] == "nan" for c in cases)
    assert (HERE / "fixtures" / "tfa_parity.json").stat().st_size < 100_000


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=_case_id)
def test_parity_with_tensorflow_addons(case: dict) -> None:
    labels, embeddings = parity_inputs.make_inputs(**{k: case[k] for k in INPUT_KEYS})
    assert parity_inputs.inputs_sha256(labels, embeddings) == case["sha256"], "inputs differ from tfa's"
    result = _ours(case, labels, embeddings)
    assert result.dtype == tf.float32
    ours = float(result)
    if case["tfa_special"] == "nan":  # no positive pair: tfa divides 0 by 0, we return 0
        assert ours == 0.0
    elif case["tfa_special"] == "inf":  # tfa's log1p(exp(x)) overflows; stable softplus stays finite
        hinge = float(triplet_hard_loss(labels, embeddings, margin=0.0, distance=case["distance"]))
        assert math.isfinite(ours) and hinge <= ours <= hinge + math.log(2.0)
    elif case["embeddings"] == "grid" and case["distance"] == "angular":
        # equal angles: float32 gives 1 − cos a few ulps apart depending on the CPU's kernels, so tfa's
        # recorded value reflects its machine's rounding; ours treats angles within ANGULAR_TIE as equal
        assert _close(ours, _exact_tie_reference(case, labels, embeddings)), ours
    elif case["dtype"] == "float32":
        assert _close(ours, case["tfa_loss"]), (ours, case["tfa_loss"])
    else:  # tfa computes in float32 and casts back; we keep the float32 value
        assert _close(ours, case["tfa_loss_float32"]), (ours, case["tfa_loss_float32"])
        spacing = float(np.spacing(np.float16(case["tfa_loss"])))
        assert abs(float(np.float16(ours)) - case["tfa_loss"]) <= spacing


def _exact_tie_reference(case: dict, labels: np.ndarray, x: np.ndarray) -> float:
    """tfa's semi-hard / hard loss in float64 on angular distances with exact ties (1 − cos < 1e-9 → 0)."""
    unit = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    dist = 1.0 - unit @ unit.T
    dist[dist < 1e-9] = 0.0
    same = labels[:, None] == labels[None, :]
    positive = same & ~np.eye(len(labels), dtype=bool)
    if case["loss"] == "hard":
        gap = np.where(positive, dist, 0).max(1) - np.where(~same, dist, np.inf).min(1)
        per_anchor = np.logaddexp(0.0, gap) if case["soft"] else np.maximum(gap + case["margin"], 0.0)
        return float(per_anchor.mean())
    losses = []
    for a, p in zip(*np.nonzero(positive)):
        negatives = dist[a][~same[a]]
        farther = negatives[negatives > dist[a, p]]
        hardest = farther.min() if farther.size else negatives.max()
        losses.append(max(dist[a, p] - hardest + case["margin"], 0.0))
    return float(np.mean(losses))


def _clusters(separation: float, spread: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    rs = np.random.RandomState(0)
    labels = np.repeat(np.arange(4), 4).astype(np.int32)
    centres = separation * np.eye(4)[labels]
    return labels, (centres + spread * rs.standard_normal(centres.shape)).astype(np.float32)


@pytest.mark.parametrize("kind", ["semihard", "hard"])
@pytest.mark.parametrize("distance", DISTANCES)
def test_zero_when_classes_separated_by_more_than_margin(kind: str, distance: str) -> None:
    far = float(LOSSES[kind](*_clusters(separation=10.0), 0.5, distance))
    assert far == 0.0
    # Classes closer than the margin (L2 0.42, squared 0.18, angular ~1 < 1.5): the loss must see it.
    near = float(LOSSES[kind](*_clusters(separation=0.3, spread=0.05), 1.5, distance))
    assert near > 0.05


def test_semihard_mining_picks_closest_farther_negative_and_ignores_ties() -> None:
    # 1-D points: anchor 0 and positive at 1 (d_ap = 1); negatives at distance 1 (a tie), 1.3 and 4.
    labels = np.array([0, 0, 1, 1, 1], np.int32)
    x = np.array([[0.0], [1.0], [-1.0], [1.3], [4.0]], np.float32)
    # anchor 0/pos 1: tie at 1 is not "farther", semi-hard negative 1.3 -> 0.5 + 1 - 1.3 = 0.2
    # anchor 1/pos 0: negatives at 2, 0.3, 3 -> closest farther than 1 is 2 -> max(0.5 + 1 - 2, 0) = 0
    # class 1 pairs: (2,3) d=2.3, negatives of 2 at 1, 2 -> none farther -> farthest 2 -> 0.8
    #                (3,2) d=2.3, negatives of 3 at 1.3, 0.3 -> none farther -> 1.3 -> 1.5
    #                (2,4) d=5: negatives 1, 2 -> 2 -> 3.5; (4,2) d=5: negatives 4, 3 -> 4 -> 1.5
    #                (3,4) d=2.7: negatives 1.3, 0.3 -> 1.3 -> 1.9; (4,3) d=2.7: negatives 4, 3 -> 3 -> 0.2
    # Counting the tie as farther would give 0.5 instead of 0.2 for the first pair.
    expected = (0.2 + 0.0 + 0.8 + 1.5 + 3.5 + 1.5 + 1.9 + 0.2) / 8
    assert float(triplet_semihard_loss(labels, x, margin=0.5, distance="L2")) == pytest.approx(expected, abs=1e-6)
    assert float(triplet_semihard_loss(labels[:, None], x, margin=0.5)) == pytest.approx(expected, abs=1e-6)


def test_angular_semihard_counts_a_gap_below_the_tie_width_as_a_tie() -> None:
    # 2-D directions: anchor at angle 0, positive at 1 rad; negative A just beyond it (1 − cos larger by
    # ~ANGULAR_TIE / 4, the size of CPU rounding noise x 2), negative B at 1.5 rad.
    d_ap = 1.0 - math.cos(1.0)
    near = math.acos(1.0 - d_ap - ANGULAR_TIE / 4)
    angles = np.array([0.0, 1.0, near, 1.5])
    labels = np.array([0, 0, 1, 1], np.int32)
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    loss = float(triplet_semihard_loss(labels, x, margin=1.0, distance="angular"))
    # anchor 0 / positive 1: A is a tie, so B is the semi-hard negative (a strict test would take A)
    d = 1.0 - np.cos(angles[:, None] - angles[None, :])
    def pair(a, p, n):
        return max(1.0 + d[a, p] - d[a, n], 0.0)
    # anchor 1 / positive 0: negatives A (~0.01 rad) and B (0.5 rad) are both closer than d_ap -> farthest: B
    # anchor 2 / positive 3 and anchor 3 / positive 2: negatives 0 and 1 by the same rules
    def semihard(a, p):
        negatives = [n for n in range(4) if labels[n] != labels[a]]
        farther = [n for n in negatives if d[a, n] > d[a, p] + ANGULAR_TIE]
        return pair(a, p, min(farther, key=lambda n: d[a, n]) if farther else max(negatives, key=lambda n: d[a, n]))
    expected = np.mean([semihard(0, 1), semihard(1, 0), semihard(2, 3), semihard(3, 2)])
    assert semihard(0, 1) == pytest.approx(pair(0, 1, 3)) and pair(0, 1, 3) < pair(0, 1, 2) - 0.1
    assert loss == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("embeddings", ["normal", "grid"])
@pytest.mark.parametrize("kind", list(LOSSES))
@pytest.mark.parametrize("distance", DISTANCES)
def test_gradient_is_finite_and_non_zero(kind: str, distance: str, embeddings: str) -> None:
    # "grid" rows are small integers with duplicates: squared distances of exactly 0, where sqrt has
    # an infinite derivative; the gradient must still be finite.
    labels, x = parity_inputs.make_inputs(5, 16, 8, 8, labels="random", embeddings=embeddings)
    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        loss = LOSSES[kind](labels, variable, 1.0, distance)
    grad = tape.gradient(loss, variable).numpy()
    assert np.all(np.isfinite(grad)) and np.abs(grad).sum() > 1e-3


@pytest.mark.parametrize("kind", list(LOSSES))
@pytest.mark.parametrize("distance", DISTANCES)
def test_float16_gives_float32_close_to_float32(kind: str, distance: str) -> None:
    labels, x = parity_inputs.make_inputs(7, 64, 32, 32, labels="two_view", embeddings="l2")
    reference = float(LOSSES[kind](labels, x, 0.5, distance))
    half = LOSSES[kind](labels, x.astype(np.float16), 0.5, distance)
    bf16 = LOSSES[kind](labels, tf.cast(x, tf.bfloat16), 0.5, distance)
    assert half.dtype == tf.float32 and bf16.dtype == tf.float32
    assert abs(float(half) - reference) <= 1e-3
    assert math.isfinite(float(bf16))


def test_works_under_xla() -> None:
    labels, x = parity_inputs.make_inputs(11, 32, 16, 16, labels="two_view", embeddings="l2")
    for kind, fn in LOSSES.items():
        compiled = tf.function(lambda y, e, fn=fn: fn(y, e, 0.5, "L2"), jit_compile=True)
        try:
            value = float(compiled(tf.constant(labels), tf.constant(x)))
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, tf.errors.NotFoundError) as err:
            if "XLA" not in str(err) and "jit" not in str(err).lower():
                raise
            pytest.skip(f"XLA is not available on this machine: {type(err).__name__}")
        assert value == pytest.approx(float(fn(labels, x, 0.5, "L2")), abs=1e-6), kind


@pytest.mark.parametrize(
    "loss",
    [
        TripletSemiHardLoss(margin=0.2, distance="angular"),
        TripletHardLoss(margin=1.0, soft=True, distance="squared-L2"),
    ],
)
def test_loss_classes_round_trip_and_match_functions(loss: keras.losses.Loss) -> None:
    labels, x = parity_inputs.make_inputs(3, 20, 6, 10, labels="two_view", embeddings="normal")
    config = keras.saving.serialize_keras_object(loss)
    assert config["registered_name"] == f"hemoembed>{type(loss).__name__}"
    restored = keras.saving.deserialize_keras_object(json.loads(json.dumps(config)))
    assert type(restored) is type(loss) and restored.get_config() == loss.get_config()
    if isinstance(loss, TripletSemiHardLoss):
        direct = triplet_semihard_loss(labels, x, margin=0.2, distance="angular")
    else:
        direct = triplet_hard_loss(labels, x, margin=1.0, soft=True, distance="squared-L2")
    assert float(restored(labels, x)) == pytest.approx(float(direct), abs=1e-6)
    assert float(direct) > 0


def test_loss_class_trains_a_keras_model() -> None:
    labels, x = parity_inputs.make_inputs(9, 32, 8, 16, labels="two_view", embeddings="normal")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=TripletSemiHardLoss())
    before = float(triplet_semihard_loss(labels, model.predict(x, verbose=0)))
    losses = model.fit(x, labels, batch_size=32, epochs=3, shuffle=False, verbose=0).history["loss"]
    assert losses[0] == pytest.approx(before, abs=1e-5)  # one batch per epoch: loss before the update
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(
    "make, bad",
    [
        (lambda: TripletSemiHardLoss(distance="cosine"), "'cosine'"),
        (lambda: TripletHardLoss(distance="l2"), "'l2'"),
        (lambda: TripletSemiHardLoss(margin=-0.1), "-0.1"),
        (lambda: TripletHardLoss(margin=float("nan")), "nan"),
        (lambda: TripletHardLoss(margin="0.5"), "'0.5'"),
        (lambda: TripletHardLoss(soft="yes"), "'yes'"),
        (lambda: triplet_semihard_loss([0, 0], [[0.0], [1.0]], distance="euclidean"), "'euclidean'"),
        (lambda: triplet_hard_loss([0, 0, 1], [[0.0], [1.0]]), "3 labels for 2 embeddings"),
    ],
)
def test_bad_settings_raise_input_error_naming_the_value(make, bad: str) -> None:
    with pytest.raises(InputError, match=bad.replace("(", r"\(").replace(".", r"\.")) as info:
        make()
    assert "\n" not in str(info.value)
