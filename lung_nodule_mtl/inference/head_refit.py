"""Refit the detection head (false-positive reduction) of a multi-task network on annotated whole scans.

Only the ``nodule`` head is trained; every other weight, and so the masks, malignancy and attributes, stay exactly
as they were. The head's whole input is the network's neck features (the pooled encoder and mask-guided decoder
maps after the shared ``neck`` layer), so they are computed once with the network frozen, on crops centred where
``predict`` scores candidates:

* every candidate the sliding-window mask proposes (its components from ``min_diameter_mm`` up, at most
  ``max_candidates`` per scan), labelled by LUNA16's rule: a nodule when its centre lies inside an annotated
  nodule's radius; candidates on excluded findings are left out;
* each annotated nodule's centre, and ``jitter`` copies moved by up to 2 mm (a candidate's centre is its mask
  component's centre of mass, rarely the nodule's own);

each crop's 8 mirror images as 8 samples (``predict`` scores the likelier candidates as the mean over them).
The head is then trained on these features alone (class-balanced binary cross-entropy, AdamW), starting from
its current weights: a refit costs forward passes only — minutes on 2 CPU cores for a dozen scans — where
retraining the network costs hours, and it uses exactly the hard negatives ``predict`` meets (vessel and pleura
fragments of the mask), which the training windows of ``train_scans.yaml`` only approximate.

::

    lung-nodule-mtl refit-detection-head --scans train_scans/images --annotations train_scans/annotations.csv \\
        --out refit/                                    # refit/model.pt (+ the fusion beside the weights)
    lung-nodule-mtl predict -i dev_scans/ -o dev_pred --checkpoint refit/model.pt --threshold 0 --max-nodules 50
    lung-nodule-mtl evaluate-froc --predictions dev_pred --annotations dev_annotations.csv \\
        --cases-from-predictions-dir --operating-point 2      # the refit head's detection threshold

Refit on scans whose nodules are all annotated (an unannotated nodule becomes a negative), never on the scans
that choose the operating point or report the results.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from lung_nodule_mtl.constants import OutputKeys
from lung_nodule_mtl.data.nodule_table import NoduleRecord
from lung_nodule_mtl.engines.inferer import MirrorInferer
from lung_nodule_mtl.io.geometry import voxel_to_world
from lung_nodule_mtl.metrics.classification import rank_auc
from lung_nodule_mtl.metrics.froc import LUNA16_MISSING_DIAMETER_MM, _hits

__all__ = [
    "HEAD_PREFIX",
    "HeadSamples",
    "collect_head_samples",
    "fit_detection_head",
    "head_scores",
    "refit_detection_head",
    "write_refit_checkpoint",
]

logger = logging.getLogger(__name__)

HEAD_PREFIX = f"heads.{OutputKeys.NODULE}."
"""State-dict prefix of the detection head: the only tensors a refit changes."""

_SAMPLE_SETTINGS = (
    "patch_size",
    "spacing_mm",
    "windows",
    "sw_roi_size",
    "sw_overlap",
    "sw_blend_mode",
    "threshold",
    "max_candidates",
    "lung_mask",
    "precision",
)
"""The predictor's settings that change a scan's samples (with the weights, the diameter floor and the jitter)."""

_MIRROR_IMAGES = 8
"""Mirror images of a 3D crop (:class:`~lung_nodule_mtl.engines.MirrorInferer` along its three axes)."""


@dataclass
class HeadSamples:
    """Neck features of crops centred on candidates and annotated nodules, with their labels.

    Attributes:
        features: ``(N, 8, F)`` float32: the neck features of each crop's 8 mirror images (identity first).
        labels: ``(N,)`` float32: 1 a nodule (an annotated centre or a candidate that hits one), 0 not.
        case_ids: ``(N,)`` the scan of each crop.
        kinds: ``(N,)`` ``"annotation"`` (an annotated centre or a jittered copy) or ``"candidate"``.
        centres_ras: ``(N, 3)`` crop centres, RAS world mm.
        diameters_mm: ``(N,)`` the candidate mask component's equivalent diameter (annotations: their diameter).
    """

    features: NDArray[np.float32]
    labels: NDArray[np.float32]
    case_ids: NDArray[np.str_]
    kinds: NDArray[np.str_]
    centres_ras: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 3)))
    diameters_mm: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @staticmethod
    def concatenate(parts: Sequence[HeadSamples]) -> HeadSamples:
        """One :class:`HeadSamples` of several (e.g. one per scan)."""
        if not parts:
            raise ValueError("no samples to concatenate.")
        return HeadSamples(
            features=np.concatenate([p.features for p in parts]),
            labels=np.concatenate([p.labels for p in parts]),
            case_ids=np.concatenate([p.case_ids for p in parts]),
            kinds=np.concatenate([p.kinds for p in parts]),
            centres_ras=np.concatenate([p.centres_ras.reshape(-1, 3) for p in parts]),
            diameters_mm=np.concatenate([p.diameters_mm for p in parts]),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the samples as a compressed ``.npz`` (temporary file, then rename)."""
        from lung_nodule_mtl.utils.io import atomic_path

        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **{k: getattr(self, k) for k in self.__dataclass_fields__})

    @staticmethod
    def load(path: str | os.PathLike[str]) -> HeadSamples:
        """Read samples written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as z:
            return HeadSamples(**{k: z[k] for k in HeadSamples.__dataclass_fields__})


def _neck(network: nn.Module) -> nn.Module:
    neck = getattr(network, "neck", None)
    heads = getattr(network, "heads", None)
    if not isinstance(neck, nn.Module) or not isinstance(heads, nn.ModuleDict) or OutputKeys.NODULE not in heads:
        raise ValueError(
            "the network has no detection head to refit (an LNMSNet with 'nodule' among its heads, e.g. the bundle's "
            "train_scans.yaml network)."
        )
    return neck


@torch.inference_mode()
def _crop_features(predictor: Any, iso: Any, centres: Sequence[Sequence[float]], batch_size: int = 8) -> np.ndarray:
    """``(N, 8, F)`` neck features of the 8 mirror images of the crops centred on ``centres`` (RAS mm)."""
    network = predictor.network
    neck = _neck(network)
    caught: list[torch.Tensor] = []
    hook = neck.register_forward_hook(lambda _m, _i, out: caught.append(out.detach().float().cpu()))
    feats: list[np.ndarray] = []
    try:
        for start in range(0, len(centres), batch_size):
            x = predictor._centred_crops(iso, centres[start : start + batch_size])
            x = x.contiguous(memory_format=torch.channels_last_3d).to(predictor.device)
            caught.clear()
            with predictor._autocast():
                MirrorInferer()(x, network)  # the 8 mirror images, identity first: the hook keeps each one's neck
            feats.append(torch.stack(caught, dim=1).numpy())
    finally:
        hook.remove()
    width = int(feats[0].shape[-1]) if feats else 0
    return np.concatenate(feats) if feats else np.zeros((0, _MIRROR_IMAGES, width), np.float32)


def _inside(centres: NDArray[np.float64], nodules: Sequence[NoduleRecord], missing_diameter_mm: float) -> NDArray:
    """Whether each centre lies strictly inside any nodule's radius (LUNA16's hit rule, as ``evaluate-froc``)."""
    hits = _hits(np.asarray(centres, dtype=np.float64).reshape(-1, 3), nodules, missing_diameter_mm)
    return np.asarray(hits.any(axis=1), dtype=bool)


def collect_head_samples(
    predictor: Any,
    image: Any,
    case_id: str,
    annotations: Sequence[NoduleRecord],
    excluded: Sequence[NoduleRecord] = (),
    *,
    min_diameter_mm: float | None = None,
    jitter: int = 2,
    jitter_mm: float = 2.0,
    seed: int = 0,
    missing_diameter_mm: float = LUNA16_MISSING_DIAMETER_MM,
) -> HeadSamples:
    """The detection head's inputs on one annotated scan: its candidates and its annotated nodules.

    Args:
        predictor: a :class:`~lung_nodule_mtl.inference.ScanPredictor` whose network has a ``nodule`` head.
        image: ``(1, H, W, D)`` CT in HU with its RAS ``affine`` (as ``predict`` reads it).
        case_id: the scan's id (kept with its samples).
        annotations: the scan's nodules (RAS centres, diameters): the positives.
        excluded: findings that are neither (candidates hitting them are left out).
        min_diameter_mm: smallest candidate mask component (default: the predictor's ``min_diameter_mm``); below
            ``predict``'s own it adds small candidates the head learns to reject or keep.
        jitter: copies of each annotated centre moved by 0.5 mm up to ``jitter_mm`` (and at most a quarter of the
            nodule's diameter) in a random direction.
        jitter_mm: largest move of a jittered copy, mm.
        seed: seed of the jitter.
        missing_diameter_mm: radius rule for annotations without a diameter (LUNA16 uses 10 mm).

    Returns:
        The scan's :class:`HeadSamples`.
    """
    if jitter < 0 or jitter_mm <= 0:
        raise ValueError(f"jitter must be >= 0 and jitter_mm > 0, got {jitter!r}, {jitter_mm!r}.")
    _neck(predictor.network)
    rng = np.random.default_rng(seed)
    iso = predictor._resampler.to_isotropic(image)
    hu = iso[0].numpy()
    lungs = predictor._find_lungs(hu)
    prob = predictor._mask_probability(iso, lungs.box, lungs.mask)[0].numpy()
    if lungs.mask is not None:
        prob *= lungs.mask[lungs.box]
    kept_min = predictor.min_diameter_mm
    if min_diameter_mm is not None:
        predictor.min_diameter_mm = float(min_diameter_mm)
    try:
        labels, _, centres_box = predictor._detect(prob, predictor._voxel_mm3)
    finally:
        predictor.min_diameter_mm = kept_min
    sizes = np.bincount(labels.ravel(), minlength=len(centres_box) + 1)[1:].astype(np.float64)
    cand_diam = (6.0 * sizes * predictor._voxel_mm3 / math.pi) ** (1.0 / 3.0)
    offset = np.asarray([s.start for s in lungs.box], dtype=np.float64)
    affine = np.asarray(iso.affine)
    cand = np.asarray([voxel_to_world(affine, c + offset) for c in centres_box], dtype=np.float64).reshape(-1, 3)
    on_nodule = _inside(cand, annotations, missing_diameter_mm)
    keep = on_nodule | ~_inside(cand, excluded, missing_diameter_mm)
    cand, cand_diam, on_nodule = cand[keep], cand_diam[keep], on_nodule[keep]

    pos: list[NDArray[np.float64]] = []
    pos_diam: list[float] = []
    for n in annotations:
        c = np.asarray(n.center_ras_mm, dtype=np.float64)
        d = float(n.diameter_mm or missing_diameter_mm)
        pos.append(c)
        pos_diam.append(d)
        for _ in range(jitter):
            step = rng.normal(size=3)
            step *= rng.uniform(0.5, max(min(jitter_mm, d / 4.0), 0.5)) / np.linalg.norm(step)
            pos.append(c + step)
            pos_diam.append(d)
    centres = np.concatenate([np.asarray(pos, dtype=np.float64).reshape(-1, 3), cand])
    feats = _crop_features(predictor, iso, centres.tolist())
    n_pos = len(pos)
    return HeadSamples(
        features=feats.astype(np.float32),
        labels=np.concatenate([np.ones(n_pos), on_nodule.astype(np.float64)]).astype(np.float32),
        case_ids=np.asarray([case_id] * len(centres), dtype=np.str_),
        kinds=np.asarray(["annotation"] * n_pos + ["candidate"] * len(cand), dtype=np.str_),
        centres_ras=centres,
        diameters_mm=np.concatenate([np.asarray(pos_diam, dtype=np.float64), cand_diam]),
    )


def head_scores(head: nn.Module, features: NDArray[np.float32], mirror_above: float | None = 0.5) -> NDArray:
    """Detection probabilities as ``predict`` computes them from ``(N, 8, F)`` features: one pass (the identity
    image), replaced by the mean of the 8 mirror images' logits where the one-pass probability is at least
    ``mirror_above`` (``None``: one pass only; 0: always mirrored)."""
    with torch.no_grad():
        x = torch.as_tensor(np.asarray(features, dtype=np.float32))
        logits = head(x.reshape(-1, x.shape[-1])).reshape(x.shape[0], x.shape[1]).double().numpy()
    one = 1.0 / (1.0 + np.exp(-logits[:, 0]))
    if mirror_above is None:
        return one
    mirrored = 1.0 / (1.0 + np.exp(-logits.mean(axis=1)))
    return np.where(one >= mirror_above, mirrored, one)


def fit_detection_head(
    head: nn.Module,
    samples: HeadSamples,
    *,
    epochs: int = 60,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train a copy of ``head`` on the samples' features (each mirror image a sample; classes balanced).

    Args:
        head: the network's ``heads["nodule"]`` (left unchanged: a trained copy is returned).
        samples: from :func:`collect_head_samples`; needs both classes.
        epochs: passes over the samples.
        learning_rate: AdamW's learning rate.
        weight_decay: AdamW's decoupled weight decay.
        batch_size: samples per step.
        seed: seed of the shuffling (and of dropout, if the head has any).

    Returns:
        ``(trained head in eval mode, summary)``: the summary has the sample counts, the final training loss and
        the crop-level AUC (the :func:`head_scores` of every crop, positives against negatives) before and after.
    """
    n_pos = int((samples.labels > 0.5).sum())
    n_neg = len(samples) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"the detection head needs nodules and non-nodules to learn from, got {n_pos} positive and {n_neg} "
            "negative crops (annotations that match the scans' case ids, and scans whose mask finds candidates)."
        )
    if epochs < 1 or batch_size < 1 or learning_rate <= 0 or weight_decay < 0:
        raise ValueError(
            f"epochs and batch_size must be >= 1, learning_rate > 0, weight_decay >= 0; got {epochs!r}, "
            f"{batch_size!r}, {learning_rate!r}, {weight_decay!r}."
        )
    before = rank_auc(head_scores(head.eval(), samples.features), samples.labels)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    trained = copy.deepcopy(head).float().train()
    m = samples.features.shape[1]
    x = torch.as_tensor(samples.features.reshape(-1, samples.features.shape[-1]), dtype=torch.float32)
    y = torch.as_tensor(np.repeat(samples.labels, m), dtype=torch.float32)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(n_neg / n_pos, dtype=torch.float32))
    opt = torch.optim.AdamW(trained.parameters(), lr=learning_rate, weight_decay=weight_decay)
    last = math.nan
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            loss = loss_fn(trained(x[idx])[:, 0], y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        last = total / count
    trained.eval()
    after = rank_auc(head_scores(trained, samples.features), samples.labels)
    summary = {
        "crops": len(samples),
        "positive_crops": n_pos,
        "negative_crops": n_neg,
        "scans": len(set(samples.case_ids.tolist())),
        "epochs": epochs,
        "learning_rate": learning_rate,
        "weight_decay": weight_decay,
        "final_loss": last,
        "training_crop_auc_before": before,
        "training_crop_auc_after": after,
    }
    return trained, summary


def write_refit_checkpoint(
    checkpoint: str | os.PathLike[str], head: nn.Module, out: str | os.PathLike[str]
) -> dict[str, Any]:
    """Write ``checkpoint``'s weights with the detection head replaced by ``head`` (temporary file, then rename).

    Every other tensor is copied unchanged (checked). A malignancy fusion beside ``checkpoint``
    (:data:`~lung_nodule_mtl.inference.fusion.FUSION_FILE`) reads only outputs the refit leaves alone, so it is
    copied beside ``out`` with its record of the weights it was fitted for moved to the new file (and the old
    fingerprint kept under ``fitted_on.weights_before_head_refit``).

    Returns:
        ``{"weights": out, "fusion": path or None, "tensors_replaced": [...]}``.

    Raises:
        ValueError: ``out`` is ``checkpoint``, or in its folder while a fusion lies there (the fusion would then
            belong to both), or the weights have no detection head of ``head``'s shape.
    """
    from lung_nodule_mtl.inference.fusion import FUSION_FILE, weights_fingerprint
    from lung_nodule_mtl.utils.io import atomic_path, atomic_write_json

    src, dst = Path(checkpoint), Path(out)
    if src.resolve() == dst.resolve():
        raise ValueError(f"{dst}: the refit weights must not overwrite the weights they come from.")
    fusion_src = src.parent / FUSION_FILE
    if fusion_src.is_file() and dst.parent.resolve() == src.parent.resolve():
        raise ValueError(
            f"{dst}: write the refit weights to another folder than {src.parent}: its {FUSION_FILE} belongs to "
            f"{src.name} and is copied beside the new weights."
        )
    state = torch.load(str(src), map_location="cpu", weights_only=True)
    nested = isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping)
    weights = dict(state["model"] if nested else state)
    new = {HEAD_PREFIX + k: v.detach().to("cpu") for k, v in head.state_dict().items()}
    missing = sorted(k for k in new if k not in weights)
    if missing or not any(k.startswith(HEAD_PREFIX) for k in weights):
        raise ValueError(f"{src}: no detection head with these tensors in the weights: {missing or list(new)}.")
    for k, v in new.items():
        if tuple(weights[k].shape) != tuple(v.shape):
            raise ValueError(f"{src}: {k} has shape {tuple(weights[k].shape)}, the refit head {tuple(v.shape)}.")
        weights[k] = v.to(weights[k].dtype).clone()
    result_state: Any = {**state, "model": weights} if nested else weights
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        torch.save(result_state, tmp)
    check = torch.load(str(dst), map_location="cpu", weights_only=True)
    check = check["model"] if nested else check
    before = dict(state["model"] if nested else state)
    changed = sorted(k for k in before if not torch.equal(before[k], check[k]))
    if any(not k.startswith(HEAD_PREFIX) for k in changed):  # pragma: no cover - a bug, not an input
        raise RuntimeError(f"refit changed tensors outside the detection head: {changed}")
    fusion_dst: Path | None = None
    if fusion_src.is_file():
        fusion = json.loads(fusion_src.read_text(encoding="utf-8"))
        fitted = fusion.get("fitted_on")
        if isinstance(fitted, dict) and isinstance(fitted.get("weights"), dict):
            fitted["weights_before_head_refit"] = fitted["weights"]
            fitted["weights"] = weights_fingerprint(dst)
        fusion_dst = atomic_write_json(fusion, dst.parent / FUSION_FILE)
    return {"weights": str(dst), "fusion": None if fusion_dst is None else str(fusion_dst), "tensors_replaced": changed}


@dataclass
class AnnotatedScans:
    """Annotated whole scans opened for a fit on the predictor's candidates (:func:`open_annotated_scans`)."""

    predictor: Any
    ckpt: str
    table: dict[str, list[NoduleRecord]]
    skip: dict[str, list[NoduleRecord]]
    cases: list[Any]
    known: set[str]
    unknown: list[str]
    cache: Path


def open_annotated_scans(
    scans: str | os.PathLike[str],
    annotations: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    excluded: str | os.PathLike[str] | None = None,
    bundle_dir: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> AnnotatedScans:
    """The bundle's scan predictor (``overrides`` on its configs, ``checkpoint`` as ``ckpt_file``), the annotation
    tables, the scans and ``out_dir/samples`` (created) for the cached samples; an error names the annotation table
    none of whose case ids is a scan."""
    from lung_nodule_mtl.data.nodule_table import read_nodule_table
    from lung_nodule_mtl.inference.bundle import load_scan_predictor
    from lung_nodule_mtl.io.ct import find_cases

    config = dict(overrides or {})
    if checkpoint is not None:
        config["ckpt_file"] = str(checkpoint)
    predictor, parser = load_scan_predictor(bundle_dir, config)
    table = read_nodule_table(annotations)
    cases = find_cases(scans)
    known = {c.case_id for c in cases}
    unknown = sorted(set(table) - known)
    if unknown and len(unknown) == len(table):
        raise ValueError(
            f"{annotations}: none of its case ids ({', '.join(unknown[:3])}, ...) is a scan of {scans} "
            f"({', '.join(sorted(known)[:3])}, ...)."
        )
    cache = Path(out_dir) / "samples"
    cache.mkdir(parents=True, exist_ok=True)
    return AnnotatedScans(
        predictor=predictor,
        ckpt=str(parser.get_parsed_content("ckpt_file")),
        table=table,
        skip=read_nodule_table(excluded) if excluded is not None else {},
        cases=cases,
        known=known,
        unknown=unknown,
        cache=cache,
    )


def cached_samples(path: Path, key: Mapping[str, Any], load: Any, make: Any) -> Any:
    """``load(path)`` when ``path`` and its ``.json`` key file beside it hold samples made with ``key``; else
    ``make()``, saved there with the key (both written atomically)."""
    from lung_nodule_mtl.utils.io import atomic_write_json

    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file() and json.loads(meta.read_text(encoding="utf-8")) == dict(key):
        return load(path)
    samples = make()
    samples.save(path)
    atomic_write_json(dict(key), meta)
    return samples


def refit_detection_head(
    scans: str | os.PathLike[str],
    annotations: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    excluded: str | os.PathLike[str] | None = None,
    bundle_dir: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "auto",
    min_diameter_mm: float | None = 1.5,
    jitter: int = 2,
    epochs: int = 60,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> dict[str, Any]:
    """The whole refit: the samples of every scan (cached under ``out_dir/samples``), the fitted head, and
    ``out_dir/model.pt`` (+ the fusion beside the weights, see :func:`write_refit_checkpoint`) and
    ``out_dir/head_refit.json`` (the summary returned).

    Args:
        scans: what ``predict`` reads: a scan, or a folder of scans and DICOM series.
        annotations: every nodule of those scans (LUNA16 ``annotations.csv`` layout, LPS mm; the scans' case ids as
            ``seriesuid``); a scan without rows is taken as free of nodules.
        out_dir: where the refit weights, the summary and the cached samples go.
        excluded: findings to leave out (LUNA16 ``annotations_excluded.csv``).
        bundle_dir: the bundle whose scan-inference configs build the predictor (default: as ``predict``).
        checkpoint: the weights to refit (default: the bundle's).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        min_diameter_mm, jitter: see :func:`collect_head_samples`.
        epochs, learning_rate, weight_decay, seed: see :func:`fit_detection_head`.
    """
    from lung_nodule_mtl.inference.fusion import weights_fingerprint
    from lung_nodule_mtl.io.ct import load_ct
    from lung_nodule_mtl.utils.io import atomic_write_json

    opened = open_annotated_scans(
        scans,
        annotations,
        out_dir,
        excluded=excluded,
        bundle_dir=bundle_dir,
        checkpoint=checkpoint,
        overrides={"device_name": device},
    )
    predictor, ckpt, table, skip = opened.predictor, opened.ckpt, opened.table, opened.skip
    cases, known, unknown, out = opened.cases, opened.known, opened.unknown, Path(out_dir)
    settings = predictor.settings()
    key = {  # what the cached samples of a scan depend on
        "weights_sha256": weights_fingerprint(ckpt)["sha256"],
        "min_diameter_mm": min_diameter_mm,
        "jitter": jitter,
        "seed": seed,
        **{k: settings[k] for k in _SAMPLE_SETTINGS},
    }

    def collect(case: Any) -> HeadSamples:
        samples = collect_head_samples(
            predictor,
            load_ct(case).image,
            case.case_id,
            table.get(case.case_id, []),
            skip.get(case.case_id, []),
            min_diameter_mm=min_diameter_mm,
            jitter=jitter,
            seed=seed + zlib.crc32(case.case_id.encode()),  # the scan's own: the same whatever else is listed
        )
        logger.info("%s: %d crops (%d nodule)", case.case_id, len(samples), int((samples.labels > 0.5).sum()))
        return samples

    parts = [
        cached_samples(opened.cache / f"{c.case_id}.npz", key, HeadSamples.load, lambda c=c: collect(c)) for c in cases
    ]
    samples = HeadSamples.concatenate(parts)
    head = predictor.network.heads[str(OutputKeys.NODULE)]
    trained, fit = fit_detection_head(
        head.cpu(), samples, epochs=epochs, learning_rate=learning_rate, weight_decay=weight_decay, seed=seed
    )
    written = write_refit_checkpoint(ckpt, trained, out / "model.pt")
    summary = {
        "scans": str(scans),
        "annotations": str(annotations),
        "excluded": None if excluded is None else str(excluded),
        "weights_before": weights_fingerprint(ckpt),
        "weights": weights_fingerprint(out / "model.pt"),
        "n_scans": len(cases),
        "n_scans_without_annotations": len(known - set(table)),
        "annotations_outside_scans": unknown,
        "min_diameter_mm": min_diameter_mm,
        "jitter": jitter,
        "seed": seed,
        **fit,
        "weights_file": written["weights"],
        "fusion": written["fusion"],
        "tensors_replaced": written["tensors_replaced"],
    }
    atomic_write_json(summary, out / "head_refit.json")
    return summary
