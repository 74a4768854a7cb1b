"""ML utility: do classifiers trained on synthetic flows work on real ones? (paper Table 4, Fig. 4, Table 8)

Features are the flattened nPrint bits of each flow's first K packets (missing packets are -1,
like absent headers). K x 1,408 bits is far too wide for an SVM on a shared CPU, so a
:class:`FeatureSpace` keeps the ``max_features`` (packet, bit) positions with the highest
variance in the *real training* data -- unsupervised, so no label or test information leaks --
and every scenario uses that same space. SVM training rows are additionally capped
(stratified). All randomness comes from one seed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from netdiffusion.evaluate.data import FlowSet

log = logging.getLogger(__name__)

MODELS: tuple[str, ...] = ("rf", "dt", "svm")
TASKS: tuple[str, ...] = ("micro", "macro")
SCENARIOS: tuple[str, ...] = ("train_real_test_real", "train_synthetic_test_real", "train_real_test_synthetic")
MIXING_RATES: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
MIN_CLASSES = 2  # fewer classes make every accuracy a trivial 1.0


@dataclass(frozen=True)
class FeatureSpace:
    """Which (packet position, nPrint column) cells become features, shared by every data set."""

    k: int
    positions: np.ndarray  # (features,) packet position within the flow
    columns: np.ndarray  # (features,) nPrint column

    @property
    def size(self) -> int:
        return int(self.positions.shape[0])


def build_space(train: FlowSet, k: int, max_features: int, chunk: int = 16384) -> FeatureSpace:
    """Top-variance (position, column) cells of the real training flows (padding counted as -1)."""
    m = train.packets.nprint
    width = m.shape[1]
    pos = train.packet_position()
    rows = np.flatnonzero(pos < k)
    sums = np.zeros((k, width))
    squares = np.zeros((k, width))
    for start in range(0, rows.size, chunk):
        r = rows[start:start + chunk]
        onehot = sp.csr_matrix((np.ones(r.size, np.float32), (pos[r], np.arange(r.size))), shape=(k, r.size))
        block = m[r].astype(np.float32)
        sums += onehot @ block
        squares += onehot @ np.abs(block)  # x**2 == |x| for x in {-1, 0, 1}
    n = max(len(train), 1)
    missing = (n - np.bincount(pos[rows], minlength=k))[:, None]  # flows shorter than position
    sums -= missing
    squares += missing
    var = (squares / n - (sums / n) ** 2).ravel()
    candidates = np.flatnonzero(var > 1e-12)
    keep = candidates[np.argsort(-var[candidates], kind="stable")[:max_features]]
    keep.sort()
    space = FeatureSpace(k=k, positions=keep // width, columns=keep % width)
    log.info("feature space: %d of %d cells vary in the training flows; kept %d", candidates.size,
             k * width, space.size)
    return space


def features(fs: FlowSet, space: FeatureSpace) -> np.ndarray:
    """``(flows, features)`` int8 matrix in ``space``."""
    if len(fs) == 0:
        return np.zeros((0, space.size), dtype=np.int8)
    table = fs.row_table(space.k)
    rows = table[:, space.positions]
    values = fs.packets.nprint[np.clip(rows, 0, None), space.columns[None, :]]
    values[rows < 0] = -1
    return values.astype(np.int8, copy=False)


def make_model(name: str, seed: int):
    """The paper's three classifiers with fixed seeds and CPU-friendly sizes."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    if name == "rf":
        return RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1)
    if name == "dt":
        return DecisionTreeClassifier(random_state=seed)
    if name == "svm":
        return SVC(kernel="rbf", gamma="scale", C=1.0, random_state=seed)
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


def stratified_sample(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most ``n`` rows keeping class shares (each class keeps at least one row)."""
    if len(y) <= n:
        return np.arange(len(y))
    classes, counts = np.unique(y, return_counts=True)
    quota = np.maximum(1, np.floor(counts * n / len(y)).astype(int))
    picks = [rng.choice(np.flatnonzero(y == c), size=min(q, cnt), replace=False)
             for c, q, cnt in zip(classes, quota, counts, strict=True)]
    return np.sort(np.concatenate(picks))


def fit_score(model: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
              seed: int, svm_max_train: int = 2000) -> dict:
    """Train one classifier and score it: accuracy, balanced accuracy, macro F1, per-class recall.

    Fewer than 2 training classes scores NaN: a one-class "classifier" predicts that class for
    every flow, so its accuracy on a one-class test set is a meaningless 1.0."""
    import warnings

    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    if len(np.unique(y_train)) < MIN_CLASSES or len(y_test) == 0:
        nan = float("nan")
        return {"accuracy": nan, "balanced_accuracy": nan, "macro_f1": nan, "train": int(len(y_train)),
                "test": int(len(y_test))}
    rng = np.random.default_rng(seed)
    if model == "svm":
        idx = stratified_sample(y_train, svm_max_train, rng)  # keeps every class
        x_train, y_train = x_train[idx], y_train[idx]
    clf = make_model(model, seed)
    clf.fit(x_train.astype(np.float32), y_train)
    predicted = clf.predict(x_test.astype(np.float32))
    labels = np.unique(y_test)
    per_class = {str(c): float((predicted[y_test == c] == c).mean()) for c in labels}
    with warnings.catch_warnings():  # predicting a class the test set lacks is expected in TRTS/TSTR,
        # and a one-class test set predicted right is a valid (if small) confusion matrix
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        balanced = float(balanced_accuracy_score(y_test, predicted))
    return {
        "accuracy": float(accuracy_score(y_test, predicted)),
        "balanced_accuracy": balanced,
        "macro_f1": float(f1_score(y_test, predicted, average="macro", zero_division=0)),
        "per_class": per_class,
        "train": int(len(y_train)),
        "test": int(len(y_test)),
    }


@dataclass
class Labelled:
    """Features with both task labels, for one data set."""

    x: np.ndarray
    micro: np.ndarray
    macro: np.ndarray

    def y(self, task: str) -> np.ndarray:
        return self.micro if task == "micro" else self.macro

    def take(self, idx: np.ndarray) -> Labelled:
        return Labelled(self.x[idx], self.micro[idx], self.macro[idx])

    @staticmethod
    def concat(parts: list[Labelled]) -> Labelled:
        return Labelled(np.concatenate([p.x for p in parts]), np.concatenate([p.micro for p in parts]),
                        np.concatenate([p.macro for p in parts]))


def labelled(fs: FlowSet, space: FeatureSpace) -> Labelled:
    return Labelled(features(fs, space), fs.label.astype(str), fs.macro.astype(str))


def scenarios(train: Labelled, test: Labelled, synthetic: Labelled, models: list[str], tasks: list[str],
              seed: int) -> dict:
    """TRTR, TSTR and TRTS: ``out[scenario][task][model] = {"accuracy": ..., ...}``."""
    pairs = {
        "train_real_test_real": (train, test),
        "train_synthetic_test_real": (synthetic, test),
        "train_real_test_synthetic": (train, synthetic),
    }
    out: dict = {}
    for scenario, (tr, te) in pairs.items():
        out[scenario] = {
            task: {model: fit_score(model, tr.x, tr.y(task), te.x, te.y(task), seed) for model in models}
            for task in tasks
        }
    return out


def mixing(train: Labelled, test: Labelled, synthetic: Labelled, models: list[str], tasks: list[str],
           seed: int, rates: tuple[float, ...] = MIXING_RATES) -> dict:
    """Accuracy on real test flows when a share ``rate`` of a constant-size training set is synthetic.

    Per class the training size is ``min(real, synthetic)`` flows, so every rate sees the same
    class mix and size (paper Fig. 4). ``out[task][model][f"{rate:.2f}"] = accuracy``."""
    rng = np.random.default_rng(seed)
    parts_by_rate: dict[float, Labelled] = {}
    for rate in rates:
        parts = []
        for cls in np.unique(train.micro):
            real_idx = np.flatnonzero(train.micro == cls)
            syn_idx = np.flatnonzero(synthetic.micro == cls)
            n = min(real_idx.size, syn_idx.size)
            if n == 0:
                continue
            n_syn = int(round(rate * n))
            parts.append(train.take(rng.choice(real_idx, n - n_syn, replace=False)))
            parts.append(synthetic.take(rng.choice(syn_idx, n_syn, replace=False)))
        if parts:
            parts_by_rate[rate] = Labelled.concat(parts)
    out: dict = {}
    for task in tasks:
        out[task] = {}
        for model in models:
            out[task][model] = {
                f"{rate:.2f}": fit_score(model, d.x, d.y(task), test.x, test.y(task), seed)["accuracy"]
                for rate, d in parts_by_rate.items()
            }
    out["training_flows"] = int(len(next(iter(parts_by_rate.values())).micro)) if parts_by_rate else 0
    return out


def balancing(train: Labelled, test: Labelled, synthetic: Labelled, models: list[str], seed: int) -> dict:
    """Top up minority classes (fewer than half the largest class) with synthetic flows (paper Table 8).

    Micro task only: the macro classes are unions of micro ones."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(train.micro, return_counts=True)
    if classes.size == 0:
        return {"minority_classes": [], "note": "no training flows"}
    target = int(counts.max())
    minority = [str(c) for c, n in zip(classes, counts, strict=True) if n < target / 2]
    if not minority:
        return {"minority_classes": [], "note": "classes already balanced (none below half the largest)"}
    extra = []
    added: dict[str, int] = {}
    for cls in minority:
        need = target - int(counts[classes == cls][0])
        pool = np.flatnonzero(synthetic.micro == cls)
        take = min(need, pool.size)
        added[cls] = int(take)
        if take:
            extra.append(synthetic.take(rng.choice(pool, take, replace=False)))
    balanced = Labelled.concat([train, *extra])
    out: dict = {"minority_classes": minority, "target_flows": target, "synthetic_added": added}
    for model in models:
        before = fit_score(model, train.x, train.micro, test.x, test.micro, seed)
        after = fit_score(model, balanced.x, balanced.micro, test.x, test.micro, seed)
        out[model] = {
            "before": {k: before.get(k) for k in ("accuracy", "balanced_accuracy", "macro_f1")},
            "after": {k: after.get(k) for k in ("accuracy", "balanced_accuracy", "macro_f1")},
            "minority_recall_before": {c: before.get("per_class", {}).get(c, float("nan")) for c in minority},
            "minority_recall_after": {c: after.get("per_class", {}).get(c, float("nan")) for c in minority},
        }
    return out


def chance(train: Labelled, test: Labelled, task: str) -> float:
    """Accuracy of always predicting the training set's most common class.

    NaN with fewer than 2 training classes, like :func:`fit_score` (it would be a trivial 1.0)."""
    y_train, y_test = train.y(task), test.y(task)
    if len(np.unique(y_train)) < MIN_CLASSES or len(y_test) == 0:
        return float("nan")
    values, counts = np.unique(y_train, return_counts=True)
    return float((y_test == values[np.argmax(counts)]).mean())
