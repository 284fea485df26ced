"""Malignancy and attributes told what the mask measures: a late fusion fitted on the readers' ratings.

LIDC malignancy ratings follow size, and several readers' ratings are densities or shapes one can measure
(calcification, texture, sphericity). A network is only worth what it adds to those measurements, so the
report's malignancy probability and attribute ratings can come from small models told the measurements of the
**predicted** mask (:mod:`lung_nodule_mtl.metrics.measurements`: size, Hounsfield units, shape) and, where
fitted on out-of-fold predictions, the network's own malignancy logit::

    P(malignant)   = sigmoid(b0 + b · z(x))        x: named features, z: standardised with the fit's centre/scale
    P(rating = c)  = softmax(B z(x) + c0)_c        one multinomial model per attribute

Both are fitted to the readers' labels (the malignancy model is a calibration: Platt scaling with more inputs).
The fitted models are a small JSON file beside the weights (``bundle/models/malignancy_fusion.json``), read by
``predict`` / ``scan_inferring`` (:class:`~lung_nodule_mtl.inference.pipeline.ScanPredictor`), ``evaluating``
(:class:`~lung_nodule_mtl.reports.evaluation.NoduleEvaluationWriter`) and ``inferring``
(:class:`~lung_nodule_mtl.reports.evaluation.SplitPredictiond`), which measure the mask the same way; where it
records the weights it was fitted for (``fitted_on.weights``), it is not used beside others (:func:`fusion_beside`);
``lung-nodule-mtl fit-malignancy`` fits it (:func:`fit_malignancy_fusion`) on ``evaluating``'s
``per_nodule.csv`` tables. Files of the first version (``malignancy_logit`` + ``log_diameter_mm``, no
standardisation, no attributes) still load.

Features: ``malignancy_logit`` (the network's, ``logit(p)``) and every name in
:data:`~lung_nodule_mtl.metrics.measurements.MEASUREMENTS` (``m_<name>`` columns of ``per_nodule.csv``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lung_nodule_mtl.constants import ATTRIBUTE_CLASSES
from lung_nodule_mtl.metrics.calibration import LogisticModel
from lung_nodule_mtl.metrics.measurements import MEASUREMENTS

__all__ = [
    "DEFAULT_ATTRIBUTE_FEATURES",
    "DEFAULT_MALIGNANCY_FEATURES",
    "FUSION_FEATURES",
    "FUSION_FILE",
    "KNOWN_FEATURES",
    "MalignancyFusion",
    "SoftmaxModel",
    "file_beside",
    "fit_malignancy_fusion",
    "fusion_beside",
    "fusion_inputs",
    "read_oof_predictions",
    "weights_fingerprint",
]

FUSION_FEATURES: tuple[str, ...] = ("malignancy_logit", "log_diameter_mm")
"""The first version's features (the network's logit and the measured size); still a valid choice."""
KNOWN_FEATURES: tuple[str, ...] = ("malignancy_logit", *MEASUREMENTS)
DEFAULT_MALIGNANCY_FEATURES: tuple[str, ...] = (
    "log_diameter_mm",
    "hu_mean",
    "calcified_fraction",
    "ground_glass_fraction",
)
"""Size and density of the predicted mask; no network output (the released weights have no out-of-fold
predictions on their own training patients, on which the fusion is fitted)."""
DEFAULT_ATTRIBUTE_FEATURES: tuple[str, ...] = MEASUREMENTS
FUSION_FILE = "malignancy_fusion.json"
"""The fusion's file name beside the weights it was fitted for."""
_EPS = 1e-6


def fusion_inputs(malignancy_prob: float | None, measurements: Mapping[str, float] | None) -> dict[str, float]:
    """The features one nodule offers a fusion: ``malignancy_logit`` (when the network gave a probability) and the
    mask's measurements (when it has a mask)."""
    out: dict[str, float] = {}
    if malignancy_prob is not None and math.isfinite(malignancy_prob):
        p = min(max(float(malignancy_prob), _EPS), 1 - _EPS)
        out["malignancy_logit"] = math.log(p / (1 - p))
    for k, v in (measurements or {}).items():
        if v is not None and math.isfinite(float(v)):
            out[k] = float(v)
    return out


def _check_features(features: Sequence[str], where: str) -> list[str]:
    names = [str(f) for f in features]
    unknown = sorted(set(names) - set(KNOWN_FEATURES))
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(f"{where}: features must be distinct names of {list(KNOWN_FEATURES)}, got {names}.")
    return names


@dataclass
class _Standard:
    """``z = (x - center) / scale`` per feature (fitted on the training nodules)."""

    features: list[str]
    center: list[float]
    scale: list[float]

    @classmethod
    def fit(cls, x: NDArray[np.float64], features: Sequence[str]) -> _Standard:
        sd = x.std(axis=0)
        return cls(list(features), x.mean(axis=0).tolist(), np.where(sd > 1e-12, sd, 1.0).tolist())

    def __call__(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return (x - np.asarray(self.center)) / np.asarray(self.scale)

    def row(self, inputs: Mapping[str, float]) -> NDArray[np.float64] | None:
        if any(f not in inputs for f in self.features):
            return None
        return self(np.asarray([[inputs[f] for f in self.features]], dtype=np.float64))


@dataclass
class SoftmaxModel:
    """Multinomial logistic regression over ``classes`` (``P(c) = softmax(coef · x + intercept)_c``), fitted by
    L-BFGS with a ridge ``l2`` (relative to the number of samples) on ``coef``."""

    classes: list[int]
    coef: list[list[float]]
    intercept: list[float]
    features: list[str]

    @classmethod
    def fit(
        cls, x: NDArray[Any], labels: Sequence[int] | NDArray[Any], features: Sequence[str], l2: float = 1e-2
    ) -> SoftmaxModel:
        from scipy.optimize import minimize

        X = np.asarray(x, dtype=np.float64)
        y = np.asarray(labels).astype(np.int64)
        classes = sorted(set(y.tolist()))
        if len(classes) < 2:
            raise ValueError(f"a multinomial model needs two classes or more; got {classes}.")
        k, n, f = len(classes), X.shape[0], X.shape[1]
        onehot = (y[:, None] == np.asarray(classes)[None, :]).astype(np.float64)
        lam = l2 * n

        def loss(w: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
            W, b = w[: k * f].reshape(k, f), w[k * f :]
            z = X @ W.T + b
            z -= z.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            value = -(onehot * logp).sum() + 0.5 * lam * (W**2).sum()
            g = np.exp(logp) - onehot
            return float(value), np.concatenate([(g.T @ X + lam * W).ravel(), g.sum(axis=0)])

        res = minimize(loss, np.zeros(k * f + k), jac=True, method="L-BFGS-B", options={"maxiter": 1000})
        W, b = res.x[: k * f].reshape(k, f), res.x[k * f :]
        return cls(classes, W.tolist(), b.tolist(), list(features))

    def predict_proba(self, x: NDArray[Any]) -> NDArray[np.float64]:
        z = np.asarray(x, dtype=np.float64) @ np.asarray(self.coef).T + np.asarray(self.intercept)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)

    def predict(self, x: NDArray[Any]) -> NDArray[np.int64]:
        return np.asarray(self.classes)[self.predict_proba(x).argmax(axis=1)]

    def to_dict(self) -> dict[str, Any]:
        return {"classes": self.classes, "coef": self.coef, "intercept": self.intercept, "features": self.features}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SoftmaxModel:
        try:
            model = cls([int(c) for c in data["classes"]], [[float(v) for v in r] for r in data["coef"]],
                        [float(v) for v in data["intercept"]], [str(f) for f in data["features"]])  # fmt: skip
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a multinomial model (needs classes, coef, intercept, features): {e}") from e
        if len(model.coef) != len(model.classes) or len(model.intercept) != len(model.classes):
            raise ValueError("a multinomial model needs one coef row and one intercept per class.")
        if any(len(r) != len(model.features) for r in model.coef):
            raise ValueError("every coef row needs one value per feature.")
        return model


@dataclass
class MalignancyFusion:
    """The fitted fusion: a malignancy model and/or attribute models; ``fitted_on`` records on what (model card)."""

    model: LogisticModel | None
    fitted_on: dict[str, Any] = field(default_factory=dict)
    standard: _Standard | None = None
    """The malignancy model's standardisation (``None``: raw features, the first version's files)."""
    attribute_models: dict[str, tuple[SoftmaxModel, _Standard]] = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        """Every feature some model of the fusion reads."""
        names = list(self.model.features) if self.model is not None else []
        for model, _ in self.attribute_models.values():
            names += [f for f in model.features if f not in names]
        return names

    def __call__(self, prob: float | None, diameter_mm: float | None) -> float | None:
        """The fused probability from the network's probability and the measured size alone (the first version's
        call; ``None`` when either is missing or the fusion reads other features)."""
        if diameter_mm is None or not (diameter_mm > 0 and math.isfinite(diameter_mm)):
            return None
        return self.malignancy(fusion_inputs(prob, {"log_diameter_mm": math.log(max(float(diameter_mm), 1.0))}))

    def malignancy(self, inputs: Mapping[str, float]) -> float | None:
        """The fused probability of one nodule (:func:`fusion_inputs`); ``None`` without a malignancy model or
        when a feature is missing."""
        if self.model is None or any(f not in inputs for f in self.model.features):
            return None
        x = np.asarray([[inputs[f] for f in self.model.features]], dtype=np.float64)
        return float(self.model.predict(x if self.standard is None else self.standard(x))[0])

    def attributes(self, inputs: Mapping[str, float]) -> dict[str, int]:
        """The fused rating of each attribute the fusion has a model for (those whose features are all given)."""
        out: dict[str, int] = {}
        for name, (model, standard) in self.attribute_models.items():
            z = standard.row(inputs)
            if z is not None:
                out[name] = int(model.predict(z)[0])
        return out

    def fuse_heads(self, heads: Mapping[str, Any], measurements: Mapping[str, float] | None) -> dict[str, Any]:
        """One nodule's readable head outputs (``head_predictions``) with the fused malignancy probability and
        attribute ratings, told the mask's ``measurements``; the network's own kept as ``<key>_network`` for
        every output the fusion has a model for (the network's value stays where a feature is missing, e.g. no
        mask)."""
        out = dict(heads)
        inputs = fusion_inputs(heads.get("malignancy_prob"), measurements)
        if self.model is not None and "malignancy_prob" in heads:
            out["malignancy_prob_network"] = heads["malignancy_prob"]
            fused = self.malignancy(inputs)
            if fused is not None:
                out["malignancy_prob"] = fused
        ratings = self.attributes(inputs)
        for name in self.attribute_models:
            if name in heads:
                out[f"{name}_network"] = heads[name]
                out[name] = ratings.get(name, heads[name])
        return out

    def save(self, path: str | os.PathLike[str]) -> Path:
        from lung_nodule_mtl.utils.io import atomic_write_json

        data: dict[str, Any] = {"kind": "malignancy_fusion", "version": 2, "fitted_on": self.fitted_on}
        if self.model is not None:
            data["malignancy"] = {**self.model.to_dict(), **_standard_dict(self.standard, self.model.features)}
        data["attributes"] = {n: {**m.to_dict(), **_standard_dict(s, m.features)} for n, (m, s) in
                              self.attribute_models.items()}  # fmt: skip
        dest = Path(path)
        atomic_write_json(data, dest)
        return dest

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MalignancyFusion:
        """Read a fusion JSON; errors name the file and what is wrong with it."""
        p, data = read_model_file(path, "malignancy_fusion", "malignancy fusion")
        fitted_on = dict(data.get("fitted_on") or {})
        try:
            if "malignancy" not in data and "attributes" not in data:  # the first version: one raw model
                first = LogisticModel.from_dict(data)
                _check_features(first.features, str(p))
                return cls(model=first, fitted_on=fitted_on)
            model: LogisticModel | None = None
            standard: _Standard | None = None
            if data.get("malignancy") is not None:
                model = LogisticModel.from_dict(data["malignancy"])
                standard = _standard_from(data["malignancy"], _check_features(model.features, f"{p}: malignancy"))
            attributes = {}
            for name, entry in (data.get("attributes") or {}).items():
                if name not in ATTRIBUTE_CLASSES:
                    raise ValueError(f"unknown attribute {name!r} (known: {list(ATTRIBUTE_CLASSES)})")
                soft = SoftmaxModel.from_dict(entry)
                attributes[name] = (soft, _standard_from(entry, _check_features(soft.features, f"{p}: {name}")))
        except ValueError as e:
            message = str(e)
            raise ValueError(message if message.startswith(str(p)) else f"{p}: {message}") from e
        return cls(model=model, fitted_on=fitted_on, standard=standard, attribute_models=attributes)

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None) -> MalignancyFusion | None:
        """``None`` for ``None`` or ``""`` (no fusion), else :meth:`load`."""
        return None if path in (None, "") else cls.load(path)  # type: ignore[arg-type]


def _standard_dict(standard: _Standard | None, features: Sequence[str]) -> dict[str, list[float]]:
    if standard is None:
        return {"center": [0.0] * len(features), "scale": [1.0] * len(features)}
    return {"center": standard.center, "scale": standard.scale}


def _standard_from(entry: Mapping[str, Any], features: list[str]) -> _Standard:
    try:
        center = [float(v) for v in entry.get("center", [0.0] * len(features))]
        scale = [float(v) for v in entry.get("scale", [1.0] * len(features))]
    except (TypeError, ValueError) as e:
        raise ValueError(f"center / scale must be lists of numbers: {e}") from e
    if len(center) != len(features) or len(scale) != len(features) or not all(s > 0 for s in scale):
        raise ValueError("center and scale need one value per feature, scale > 0.")
    return _Standard(features, center, scale)


def weights_fingerprint(ckpt_file: str | os.PathLike[str]) -> dict[str, str]:
    """``{"file", "sha256"}`` of a weights file: what a fusion records as the weights it was fitted for."""
    from lung_nodule_mtl.utils.io import file_sha256

    p = Path(ckpt_file)
    if not p.is_file():
        raise FileNotFoundError(f"weights file not found: {str(p)!r}.")
    return {"file": p.name, "sha256": file_sha256(p)}


def fusion_beside(ckpt_file: str | os.PathLike[str] | None) -> str | None:
    """The fusion fitted for these weights: :data:`FUSION_FILE` in the weights' folder if it exists, else ``None``.

    A fusion belongs to the network whose predictions it was fitted on, so it is looked up beside the
    weights, never elsewhere: other weights (a run of your own) get no fusion unless one is put beside them.
    Where the file records the weights it was fitted for (``fitted_on.weights.sha256``, ``fit-malignancy
    --weights``) and these are other weights (e.g. retrained in the same folder), it is not used, with a warning.
    """
    return file_beside(ckpt_file, FUSION_FILE, "lung-nodule-mtl fit-malignancy --weights")


def read_model_file(path: str | os.PathLike[str], kind: str, what: str) -> tuple[Path, dict[str, Any]]:
    """The JSON object of a fitted-model file whose ``"kind"`` is ``kind``; errors name the file (``what``: its
    kind in words) and what is wrong with it."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file not found: {str(p)!r}.")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e}).") from e
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise ValueError(f'{p}: not a {what} file (needs "kind": "{kind}").')
    return p, data


def file_beside(ckpt_file: str | os.PathLike[str] | None, name: str, refit: str) -> str | None:
    """``name`` in the folder of the weights ``ckpt_file`` if it exists and, where it records the weights it was
    fitted for (``fitted_on.weights.sha256``), was fitted for these; else ``None`` (with a warning naming
    ``refit``, the command that fits it, when it belongs to other weights)."""
    if ckpt_file in (None, ""):
        return None
    path = Path(str(ckpt_file)).parent / name
    if not path.is_file():
        return None
    try:
        expected = json.loads(path.read_text(encoding="utf-8"))["fitted_on"]["weights"]["sha256"]
    except (ValueError, KeyError, TypeError):
        return str(path)  # no record of the weights (or a broken file: load names the problem)
    if Path(str(ckpt_file)).is_file() and weights_fingerprint(str(ckpt_file))["sha256"] != expected:
        warnings.warn(
            f"{path}: fitted for other weights (sha256 {str(expected)[:12]}…) than {str(ckpt_file)!r}; not used. "
            f"Refit it for these weights ({refit}) or remove it.",
            stacklevel=3,
        )
        return None
    return str(path)


def _float(value: str | None) -> float:
    return float(value) if value not in (None, "") else math.nan


def read_oof_predictions(tables: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """Nodules of ``evaluating``'s ``per_nodule.csv`` tables, one fold per table.

    Reads the network's probability (``pred_malignancy_prob_network`` where the table has it, i.e. where it was
    written with a fusion, else ``pred_malignancy_prob``), the predicted mask's size (``pred_diameter_mm``) and
    measurements (``m_*``, ``nan`` where the table has none), the network's attribute ratings, the reference
    diameter, label and ratings, and the patient. Every nodule with a predicted mask is kept (``label`` is ``nan``
    for indeterminate or unrated malignancy, the attribute columns where a rating is missing).

    Returns:
        ``{"prob", "pred_diameter_mm", "diameter_mm", "label", "patient", "fold", "measurements": {name: array},
        "attributes": {name: array}, "network_attributes": {name: array}}`` (``fold``: the table's position).

    Raises:
        FileNotFoundError: a table is missing. ValueError: a table lacks the columns.
    """
    cols: dict[str, list[Any]] = {k: [] for k in ("prob", "pred_diameter_mm", "diameter_mm", "label", "patient",
                                                  "fold")}  # fmt: skip
    measured: dict[str, list[float]] = {m: [] for m in MEASUREMENTS}
    rated: dict[str, list[float]] = {a: [] for a in ATTRIBUTE_CLASSES}
    network: dict[str, list[float]] = {a: [] for a in ATTRIBUTE_CLASSES}
    for k, table in enumerate(tables):
        path = Path(table)
        if not path.is_file():
            raise FileNotFoundError(f"per-nodule table not found: {str(path)!r}.")
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            names = set(reader.fieldnames or [])
            prob_col = (
                "pred_malignancy_prob_network" if "pred_malignancy_prob_network" in names else "pred_malignancy_prob"
            )
            missing = {prob_col, "pred_diameter_mm", "malignancy"} - names
            if missing:
                raise ValueError(
                    f"{path}: lacks the columns {sorted(missing)} (evaluating's per_nodule.csv of a network with a "
                    "malignancy head, written by this version)."
                )
            for row in reader:
                if not row["pred_diameter_mm"]:
                    continue
                label = row["malignancy"]
                cols["prob"].append(_float(row[prob_col]))
                cols["pred_diameter_mm"].append(float(row["pred_diameter_mm"]))
                cols["diameter_mm"].append(_float(row.get("diameter_mm")))
                cols["label"].append(float(label) if label in ("0", "1", "0.0", "1.0") else math.nan)
                cols["patient"].append(f"{k}:{row.get('patient_id') or row.get('case_id')}")
                cols["fold"].append(k)
                for m in MEASUREMENTS:
                    measured[m].append(_float(row.get(f"m_{m}")))
                for a in ATTRIBUTE_CLASSES:
                    rated[a].append(_float(row.get(a)))
                    net = row.get(f"pred_{a}_network") or row.get(f"pred_{a}")
                    network[a].append(_float(net))
    out: dict[str, Any] = {k: np.asarray(v) for k, v in cols.items()}
    out["measurements"] = {k: np.asarray(v, dtype=np.float64) for k, v in measured.items()}
    out["attributes"] = {k: np.asarray(v, dtype=np.float64) for k, v in rated.items()}
    out["network_attributes"] = {k: np.asarray(v, dtype=np.float64) for k, v in network.items()}
    return out


def _design(data: Mapping[str, Any], features: Sequence[str]) -> NDArray[np.float64]:
    """The ``(n, k)`` feature matrix of :func:`read_oof_predictions`'s nodules (``nan`` where one is missing)."""
    columns = []
    for f in features:
        if f == "malignancy_logit":
            p = np.clip(data["prob"].astype(np.float64), _EPS, 1 - _EPS)
            columns.append(np.log(p / (1 - p)))
        elif f == "log_diameter_mm" and np.isnan(data["measurements"][f]).all():  # tables before measurements
            columns.append(np.log(np.maximum(data["pred_diameter_mm"].astype(np.float64), 1.0)))
        else:
            columns.append(data["measurements"][f])
    return np.stack(columns, axis=1) if columns else np.zeros((len(data["prob"]), 0))


def _groups(data: Mapping[str, Any], n_tables: int) -> NDArray[np.int64]:
    """Folds of the out-of-fold report: the tables, or five groups of patients for one table."""
    if n_tables > 1:
        return np.asarray(data["fold"], dtype=np.int64)
    patients = np.unique(data["patient"], return_inverse=True)[1]
    order = np.random.default_rng(0).permutation(int(patients.max()) + 1)
    return np.asarray(order[patients] % 5, dtype=np.int64)


def _fit_logistic(x: NDArray[np.float64], y: NDArray[np.float64], features: Sequence[str], l2: float) -> tuple[
        LogisticModel, _Standard]:  # fmt: skip
    standard = _Standard.fit(x, features)
    return LogisticModel.fit(standard(x), y, list(features), l2=l2), standard


def _fit_softmax(x: NDArray[np.float64], y: NDArray[np.float64], features: Sequence[str], l2: float) -> tuple[
        SoftmaxModel, _Standard]:  # fmt: skip
    standard = _Standard.fit(x, features)
    return SoftmaxModel.fit(standard(x), y.astype(np.int64), features, l2=l2), standard


def _malignancy_report(
    data: Mapping[str, Any], features: Sequence[str], fold: NDArray[np.int64], l2: float, n_bootstrap: int
) -> tuple[dict[str, Any], NDArray[np.bool_]]:
    from lung_nodule_mtl.metrics.calibration import calibration_report, size_matched_auc
    from lung_nodule_mtl.metrics.classification import paired_auc_bootstrap, rank_auc

    x = _design(data, features)
    use = np.isfinite(data["label"]) & np.isfinite(x).all(axis=1)
    y, x, p, dp, dref = (data["label"][use], x[use], data["prob"][use], data["pred_diameter_mm"][use],
                         data["diameter_mm"][use])  # fmt: skip
    fold = fold[use]
    groups = [str(g) for g in data["patient"][use]]
    if y.size < 10 or len(set(y.tolist())) < 2:
        raise ValueError(
            f"too few benign and malignant nodules to fit on ({y.size}, classes {sorted(set(y.tolist()))})."
        )
    fused, size_only = np.full(y.size, math.nan), np.full(y.size, math.nan)
    log_d = np.log(np.maximum(dp, 1.0))[:, None]
    for k in np.unique(fold):
        here, rest = fold == k, fold != k
        if len(set(y[rest].tolist())) < 2:
            raise ValueError(f"fold {k}: the other folds hold one class only; cannot fit out of fold.")
        model, standard = _fit_logistic(x[rest], y[rest], features, l2)
        fused[here] = model.predict(standard(x[here]))
        size_model, size_standard = _fit_logistic(log_d[rest], y[rest], ["log_diameter_mm"], l2)
        size_only[here] = size_model.predict(size_standard(log_d[here]))
    cal_fused = calibration_report(fused, y)
    vs_mask = paired_auc_bootstrap(fused, dp, y, groups, n_bootstrap=n_bootstrap, seed=0)
    report: dict[str, Any] = {
        "features": list(features),
        "n_nodules": int(y.size),
        "n_malignant": int(y.sum()),
        "n_folds": int(np.unique(fold).size),
        "fused_auc": vs_mask["auc_a"],
        "ci_fused": vs_mask["ci_a"],
        "mask_diameter_auc": vs_mask["auc_b"],
        "fused_minus_mask_diameter": vs_mask["difference"],
        "ci_fused_minus_mask_diameter": vs_mask["ci_difference"],
        "brier": {"fused": cal_fused["brier"], "mask_diameter_logistic": calibration_report(size_only, y)["brier"]},
        "ece": {"fused": cal_fused["ece"]},
    }
    has_network = np.isfinite(p).all()
    if has_network:
        report["network_auc"] = rank_auc(p, y)
        report["brier"]["network"] = calibration_report(p, y)["brier"]
        report["ece"]["network"] = calibration_report(p, y)["ece"]
    ok = np.isfinite(dref)
    if ok.any() and len(set(y[ok].tolist())) == 2:
        vs_ref = paired_auc_bootstrap(
            fused[ok], dref[ok], y[ok], [g for g, k in zip(groups, ok, strict=True) if k], n_bootstrap=n_bootstrap
        )
        report.update(
            reference_diameter_auc=vs_ref["auc_b"],
            fused_minus_reference_diameter=vs_ref["difference"],
            ci_fused_minus_reference_diameter=vs_ref["ci_difference"],
            size_matched_fused=size_matched_auc(fused[ok], y[ok], dref[ok]),
        )
        if has_network:
            report["size_matched_network"] = size_matched_auc(p[ok], y[ok], dref[ok])
    return report, use


def _attribute_report(
    data: Mapping[str, Any], name: str, features: Sequence[str], fold: NDArray[np.int64], l2: float
) -> tuple[dict[str, Any], NDArray[np.bool_]]:
    """Out-of-fold exact and within-one accuracy of the fused rating, the network's and the majority rating of
    the other folds, on the nodules rated for ``name`` with every feature."""
    x = _design(data, features)
    y = data["attributes"][name]
    use = np.isfinite(y) & np.isfinite(x).all(axis=1)
    x, y, net, fold = x[use], y[use], data["network_attributes"][name][use], fold[use]
    fused, majority = np.full(y.size, math.nan), np.full(y.size, math.nan)
    for k in np.unique(fold):
        here, rest = fold == k, fold != k
        values, counts = np.unique(y[rest], return_counts=True)
        majority[here] = values[counts.argmax()]
        if values.size < 2:
            fused[here] = values[0]
            continue
        model, standard = _fit_softmax(x[rest], y[rest], features, l2)
        fused[here] = model.predict(standard(x[here]))

    def scores(pred: NDArray[np.float64]) -> dict[str, float]:
        ok = np.isfinite(pred)
        return {"exact": float(np.mean(pred[ok] == y[ok])) if ok.any() else math.nan,
                "within_one": float(np.mean(np.abs(pred[ok] - y[ok]) <= 1)) if ok.any() else math.nan}  # fmt: skip

    return {"n": int(y.size), "fused": scores(fused), "network": scores(net), "majority": scores(majority)}, use


def fit_malignancy_fusion(
    tables: Sequence[str | os.PathLike[str]],
    l2: float = 1e-2,
    n_bootstrap: int = 2000,
    features: Sequence[str] | None = FUSION_FEATURES,
    attribute_features: Sequence[str] | None = None,
    attribute_tables: Sequence[str | os.PathLike[str]] | None = None,
) -> tuple[MalignancyFusion, dict[str, Any]]:
    """Fit the fusion on ``evaluating``'s predictions and say what it is worth, out of fold.

    Args:
        tables: ``evaluating``'s ``per_nodule.csv`` of each fold (each nodule predicted by a network that did not
            train on it, where ``features`` include ``malignancy_logit``), or of one set (then the report below
            splits its patients into five groups).
        l2: ridge on the coefficients (relative to the number of nodules), on standardised features.
        n_bootstrap: patient-level bootstrap samples of the intervals.
        features: the malignancy model's features (``None``: no malignancy model); the default is the first
            version's (network logit + measured size), :data:`DEFAULT_MALIGNANCY_FEATURES` the measured set.
        attribute_features: the attribute models' features (``None``: no attribute models); one model per
            attribute whose ratings take two values or more.
        attribute_tables: the tables of the attribute models, where they differ from ``tables`` (e.g. the
            malignancy calibrated on the released weights' held-out fold, the attributes on the measurements of
            every fold); ``None``: ``tables``.

    Returns:
        The fusion fitted on all nodules, and a report: for each fold a fusion fitted on the **other** folds
        scores it, and the pooled scores give the fused AUC, its paired difference to the diameter alone (the
        measured mask size, and the reference diameter) with patient-level 95% intervals, the size-matched AUC
        (reference diameters) and the Brier scores of the fused, the network's and a diameter-only model's
        probabilities; per attribute the exact and within-one accuracy of the fused, the network's and the
        majority rating.
    """
    if features is None and attribute_features is None:
        raise ValueError("nothing to fit: give features, attribute_features or both.")
    data = read_oof_predictions(tables)
    fold = _groups(data, len(tables))
    report: dict[str, Any] = {"tables": [str(t) for t in tables]}
    if attribute_tables is not None:
        report["attribute_tables"] = [str(t) for t in attribute_tables]
    model, standard = None, None
    if features is not None:
        features = _check_features(features, "features")
        report["malignancy"], use = _malignancy_report(data, features, fold, l2, n_bootstrap)
        x = _design(data, features)[use]
        model, standard = _fit_logistic(x, data["label"][use], features, l2)
    attribute_models: dict[str, tuple[SoftmaxModel, _Standard]] = {}
    if attribute_features is not None:
        attribute_features = _check_features(attribute_features, "attribute_features")
        if attribute_tables is not None:
            data = read_oof_predictions(attribute_tables)
            fold = _groups(data, len(attribute_tables))
        report["attributes"] = {}
        for name in ATTRIBUTE_CLASSES:
            y = data["attributes"][name]
            if np.unique(y[np.isfinite(y)]).size < 2:
                continue
            report["attributes"][name], use = _attribute_report(data, name, attribute_features, fold, l2)
            x = _design(data, attribute_features)[use]
            attribute_models[name] = _fit_softmax(x, y[use], attribute_features, l2)
    fitted_on = {
        "tables": report["tables"],
        **({"attribute_tables": report["attribute_tables"]} if "attribute_tables" in report else {}),
        "out_of_fold": _summary(report),
    }
    fusion = MalignancyFusion(model=model, fitted_on=fitted_on, standard=standard, attribute_models=attribute_models)
    return fusion, report


def _summary(report: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "malignancy" in report:
        m = report["malignancy"]
        out["malignancy"] = {k: m[k] for k in ("features", "n_nodules", "fused_auc", "mask_diameter_auc", "brier",
                                               "ece")}  # fmt: skip
        out["malignancy"].update({k: m[k] for k in ("network_auc",) if k in m})
    if "attributes" in report:
        out["attributes"] = {n: {w: r[w]["exact"] for w in ("fused", "network", "majority")}
                             for n, r in report["attributes"].items()}  # fmt: skip
    return out
