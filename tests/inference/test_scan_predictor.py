"""Whole-scan inference on an analytic phantom with a stand-in network whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from lung_nodule_mtl.constants import ATTRIBUTE_CLASSES
from lung_nodule_mtl.data.synthetic.phantom import PhantomNodule, chest_phantom
from lung_nodule_mtl.inference import ScanPredictor, bounding_box, lung_mask, resolve_device
from lung_nodule_mtl.io.geometry import voxel_to_world


def _image(image: np.ndarray, affine: np.ndarray) -> MetaTensor:
    return MetaTensor(torch.from_numpy(image.astype(np.float32))[None], affine=torch.from_numpy(affine))


@pytest.fixture
def make_predictor(threshold_net):
    """A factory of ScanPredictor around the stand-in network (see conftest.ThresholdNet)."""

    def make(**kwargs) -> ScanPredictor:
        kwargs.setdefault("patch_size", (32, 32, 32))
        kwargs.setdefault("max_diameter_mm", 40.0)  # the stand-in segments the chest wall within the lung margin
        kwargs.setdefault("device", "cpu")
        return ScanPredictor(threshold_net(), **kwargs)

    return make


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


NODULES = (PhantomNodule((-40.0, 10.0, 5.0), 12.0), PhantomNodule((35.0, -5.0, -20.0), 7.0))


@pytest.fixture(scope="module")
def phantom() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return chest_phantom(shape=(150, 120, 48), spacing_mm=(0.9, 0.9, 2.5), nodules=NODULES, lps=True)


def test_lung_mask_holds_the_lungs_and_nodules_not_the_air(phantom) -> None:
    image, _, labels = phantom
    mask = lung_mask(image, (0.9, 0.9, 2.5))
    assert mask is not None and mask.shape == image.shape
    lung = image == -850
    assert mask[lung].mean() == 1.0
    assert mask[labels > 0].all()  # nodules inside the lung are filled in
    assert not mask[0, 0, :].any()  # outside air dropped
    assert mask[image == 40].mean() < 0.2  # the body wall is mostly out (a margin only)
    box = bounding_box(mask)
    assert box is not None and box[0].start > 0 and box[0].stop < image.shape[0]


def test_lung_mask_none_without_lungs() -> None:
    block = np.full((40, 40, 20), 40, dtype=np.int16)
    assert lung_mask(block, (1.0, 1.0, 1.0)) is None
    with pytest.raises(ValueError, match="spacing"):
        lung_mask(block, (1.0, 0.0, 1.0))


def test_detects_nodules_on_the_input_grid(phantom, make_predictor) -> None:
    image, affine, truth = phantom
    result = make_predictor().predict(_image(image, affine))
    assert result.labels.shape == image.shape and np.allclose(result.affine, affine)
    assert len(result.nodules) == 2 and result.warnings == []
    by_size = sorted(result.nodules, key=lambda n: -n.volume_mm3)
    for nodule, expected, value in zip(by_size, NODULES, (1, 2), strict=True):
        assert np.linalg.norm(np.subtract(nodule.center_world_mm_ras, expected.center_ras_mm)) < 1.0
        assert nodule.center_world_mm_lps == pytest.approx(
            [-nodule.center_world_mm_ras[0], -nodule.center_world_mm_ras[1], nodule.center_world_mm_ras[2]]
        )
        centre_from_voxel = voxel_to_world(affine, np.asarray(nodule.center_voxel, dtype=float))
        assert np.all(np.abs(centre_from_voxel - nodule.center_world_mm_ras) <= np.array([0.9, 0.9, 2.5]) / 2 + 1e-6)
        volume = math.pi / 6.0 * expected.diameter_mm**3
        assert nodule.volume_mm3 == pytest.approx(volume, rel=0.15)
        assert nodule.diameter_mm == pytest.approx(expected.diameter_mm, rel=0.06)
        assert _dice(result.labels == nodule.label, truth == value) > 0.8
        assert nodule.voxels_in_label_map == int((result.labels == nodule.label).sum())
        assert nodule.detection_probability > 0.99 and nodule.source == "detected"
        assert nodule.attributes == {name: n for name, n in ATTRIBUTE_CLASSES.items()}
    assert by_size[0].malignancy_probability > by_size[1].malignancy_probability  # the stand-in's known answer
    assert result.lung_volume_ml is not None and 300 < result.lung_volume_ml < 800


def test_min_diameter_and_max_nodules(phantom, make_predictor) -> None:
    image, affine, _ = phantom
    assert len(make_predictor(min_diameter_mm=9.0).predict(_image(image, affine)).nodules) == 1
    only = make_predictor(max_nodules=1).predict(_image(image, affine)).nodules
    assert len(only) == 1 and only[0].label == 1


@pytest.fixture(scope="module")
def wide_phantom() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A wide field of view: the lungs fill the middle, windows at the sides hold none."""
    return chest_phantom(shape=(240, 200, 48), spacing_mm=(0.9, 0.9, 2.5), nodules=NODULES, lps=True)


def test_lung_mask_restricts_the_sliding_window(wide_phantom, threshold_net) -> None:
    image, affine, _ = wide_phantom
    net_lung, net_all = threshold_net(), threshold_net()
    with_mask = ScanPredictor(net_lung, patch_size=(32, 32, 32), device="cpu", sw_batch_size=1)
    restricted = with_mask.predict(_image(image, affine))
    assert len(restricted.nodules) >= 3  # two nodules + the chest wall in the margin
    whole = ScanPredictor(net_all, patch_size=(32, 32, 32), device="cpu", sw_batch_size=1, use_lung_mask=False)
    result = whole.predict(_image(image, affine))
    assert restricted.counts["windows"] < result.counts["windows"]  # only the windows holding lung run
    assert result.counts["windows_skipped"] == 0
    assert net_lung.calls == restricted.counts["windows"] + len(restricted.nodules)  # windows + one crop per nodule
    assert len(result.nodules) >= 1  # without the mask the body itself is a (huge) candidate
    assert max(n.volume_mm3 for n in result.nodules) > 10 * math.pi / 6.0 * 12.0**3


def test_given_centres(phantom, make_predictor) -> None:
    image, affine, truth = phantom
    predictor = make_predictor()
    # the second centre is in lung parenchyma, more than snap_mm from any tissue: no mask there
    result = predictor.predict(_image(image, affine), centers_ras=[NODULES[1].center_ras_mm, (-33.0, 0.0, 30.0)])
    assert [n.source for n in result.nodules] == ["given", "given"]
    first, second = result.nodules
    assert first.center_world_mm_ras == pytest.approx(list(NODULES[1].center_ras_mm))
    assert _dice(result.labels == 1, truth == 2) > 0.8
    assert second.volume_mm3 == 0.0 and second.diameter_mm is None and second.detection_probability is None
    assert any("nodule 2" in w for w in result.warnings)
    with pytest.raises(ValueError, match="outside the image"):
        predictor.predict(_image(image, affine), centers_ras=[(0.0, 0.0, 500.0)])


def test_no_lung_analyses_the_whole_image(make_predictor) -> None:
    image, affine, _ = chest_phantom(shape=(64, 48, 24), spacing_mm=(2.0, 2.0, 1.0), nodules=())
    image[:] = -1000
    image[20:28, 20:28, 8:16] = 40
    result = make_predictor(patch_size=(16, 16, 16)).predict(_image(image, affine))
    assert any("no lung found" in w for w in result.warnings) and result.lung_volume_ml is None
    assert len(result.nodules) == 1 and result.nodules[0].volume_mm3 == pytest.approx(16 * 16 * 8, rel=0.2)


def test_bad_arguments(make_predictor) -> None:
    with pytest.raises(ValueError, match="threshold"):
        make_predictor(threshold=1.5)
    with pytest.raises(ValueError, match="overlap"):
        make_predictor(overlap=1.0)
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match=r"\(1, H, W, D\)"):
        make_predictor().predict(MetaTensor(torch.zeros(2, 8, 8, 8)))


def test_checkpoint_loaded_with_weights_only(tmp_path) -> None:
    from lung_nodule_mtl.networks import LNMSNet

    net = LNMSNet(spatial_dims=3, in_channels=3, out_channels=1, init_filters=4)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.5)
    torch.save({"model": net.state_dict()}, tmp_path / "model.pt")
    fresh = LNMSNet(spatial_dims=3, in_channels=3, out_channels=1, init_filters=4)
    predictor = ScanPredictor(fresh, str(tmp_path / "model.pt"), device="cpu")
    for a, b in zip(predictor.network.state_dict().values(), net.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not predictor.network.training


@pytest.mark.gpu
def test_cuda_with_amp_matches_cpu(phantom, make_predictor) -> None:
    image, affine, _ = phantom
    cpu = make_predictor().predict(_image(image, affine))
    gpu_predictor = make_predictor(device="cuda")
    assert gpu_predictor.amp and gpu_predictor.device.type == "cuda"
    gpu = gpu_predictor.predict(_image(image, affine))
    assert len(gpu.nodules) == len(cpu.nodules)
    assert _dice(gpu.labels > 0, cpu.labels > 0) > 0.98


@pytest.mark.parametrize("overlap", [0.25, 0.5])
def test_lung_box_and_skipped_windows_change_no_value_in_the_lungs(wide_phantom, threshold_net, overlap) -> None:
    from monai.inferers import SlidingWindowInferer

    class WindowMeanNet(threshold_net):
        """Its mask logit depends on the window it sees (its mean), as a network with instance norm does."""

        def segment(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return 40.0 * (x[:, :1] - 0.42) + 30.0 * (x[:, :1].mean(dim=(2, 3, 4), keepdim=True) - 0.3)

    image, affine, _ = wide_phantom
    roi = (32, 32, 32)

    def run(aligned: bool):
        predictor = ScanPredictor(WindowMeanNet(), patch_size=roi, overlap=overlap, device="cpu", keep_images=True)
        if not aligned:
            predictor.window_aligned_box = lambda box, shape: tuple(box)
        return predictor, predictor.predict(_image(image, affine))

    predictor, result = run(aligned=True)
    assert result.counts["windows"] > 0 and result.counts["windows_skipped"] > 0
    lung = result.isotropic_lung
    x = predictor.window(result.isotropic_image.as_tensor()).unsqueeze(0)
    whole = SlidingWindowInferer(roi, sw_batch_size=4, overlap=overlap, mode="gaussian")(x, WindowMeanNet().segment)
    expected = torch.sigmoid(whole[0, 0]).numpy() * lung
    np.testing.assert_allclose(result.isotropic_probability, expected, atol=1e-5)
    # the same lungs with windows placed from the lungs' own corner: other windows, other values
    _, misaligned = run(aligned=False)
    assert np.abs(misaligned.isotropic_probability - expected).max() > 0.05


def test_precision_follows_the_device(make_predictor, monkeypatch) -> None:
    from lung_nodule_mtl.inference import autocast_dtype, pipeline

    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, False) is None
    assert autocast_dtype(cpu, True) is torch.bfloat16  # asked for: emulated where the CPU lacks it
    assert autocast_dtype(torch.device("cuda"), None) is torch.float16
    for native in (True, False):  # the one CPU check (engines.inferer.cpu_bf16_native) decides "auto"
        monkeypatch.setattr(pipeline, "cpu_bf16_native", lambda native=native: native)
        assert autocast_dtype(cpu, None) is (torch.bfloat16 if native else None)
    monkeypatch.undo()
    assert make_predictor(amp=False).settings()["precision"] == "float32"
    assert make_predictor(amp=True).settings()["precision"] == "bfloat16"


def test_detection_head_scores_ranks_and_thresholds_the_candidates(phantom, threshold_net) -> None:
    """With a ``nodule`` head, detection_probability is the head's, candidates are ranked by it and those below the
    operating point are not reported. The stand-in's head calls a candidate a nodule in proportion to its size, so
    the 7 mm nodule scores below the 12 mm one and a threshold between them keeps only the big one."""
    from lung_nodule_mtl.constants import OutputKeys

    class DetectingNet(threshold_net):
        def __init__(self) -> None:
            super().__init__()
            self.heads = torch.nn.ModuleDict({str(OutputKeys.NODULE): torch.nn.Identity()})

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            out = super().forward(x)
            fg = (out[str(OutputKeys.MASK)] > 0).float().mean(dim=(1, 2, 3, 4))
            out[str(OutputKeys.NODULE)] = (fg * 400.0 - 4.0)[:, None]  # logit grows with the foreground
            return out

    image, affine, _ = phantom
    common = {"patch_size": (32, 32, 32), "max_diameter_mm": 40.0, "device": "cpu"}
    everything = ScanPredictor(DetectingNet(), detection_threshold=None, **common)
    result = everything.predict(_image(image, affine))
    assert everything.settings()["detection_score"] == "nodule head"
    scores = [n.detection_probability for n in result.nodules]
    assert len(scores) == 2 and scores == sorted(scores, reverse=True) and scores[0] > scores[1]
    assert result.nodules[0].diameter_mm > result.nodules[1].diameter_mm  # the big one ranks first
    assert set(np.unique(result.labels).tolist()) == {0, 1, 2}  # label k is the k-th most probable
    between = (scores[0] + scores[1]) / 2
    kept = ScanPredictor(DetectingNet(), detection_threshold=between, **common).predict(_image(image, affine))
    assert len(kept.nodules) == 1 and kept.nodules[0].detection_probability == pytest.approx(scores[0])
    assert set(np.unique(kept.labels).tolist()) == {0, 1}  # the dropped candidate leaves the label map too
    assert ScanPredictor(threshold_net(), **common).settings()["detection_score"] == "mask peak"
    with pytest.raises(ValueError, match="detection_threshold"):
        ScanPredictor(DetectingNet(), detection_threshold=1.0, **common)


def test_malignancy_fused_with_the_measured_size(phantom, make_predictor, tmp_path) -> None:
    from lung_nodule_mtl.inference.fusion import MalignancyFusion, SoftmaxModel, _Standard
    from lung_nodule_mtl.metrics.calibration import LogisticModel

    image, affine, _ = phantom
    plain = make_predictor().predict(_image(image, affine)).nodules
    # a fusion that ignores the network and says sigmoid(log d - log 10): 0.5 at 10 mm
    model = LogisticModel(coef=[0.0, 1.0], intercept=-math.log(10.0), features=["malignancy_logit", "log_diameter_mm"])
    # and a texture model that rates part-solid (3) what is dense inside the mask (hu_mean > -3, in hundreds of HU),
    # else solid (5): the opposite of the truth, so that the fused rating cannot be the network's
    texture = SoftmaxModel(classes=[3, 5], coef=[[10.0], [0.0]], intercept=[30.0, 0.0], features=["hu_mean"])
    unit = _Standard(["hu_mean"], [0.0], [1.0])
    path = MalignancyFusion(model, attribute_models={"texture": (texture, unit)}).save(
        tmp_path / "malignancy_fusion.json"
    )
    predictor = make_predictor(malignancy_fusion=path)
    fused = predictor.predict(_image(image, affine)).nodules
    info = predictor.model_info["malignancy_fusion"]
    assert info["malignancy_features"] == ["malignancy_logit", "log_diameter_mm"] and info["attributes"] == ["texture"]
    assert plain and len(plain) == len(fused)
    for a, b in zip(plain, fused, strict=True):
        d = b.diameter_mm
        # sigmoid(log(d / 10)); the fusion measures the unrounded size
        assert b.malignancy_probability == pytest.approx(d / (d + 10.0), abs=1e-4)
        assert b.malignancy_probability_network == a.malignancy_probability and a.malignancy_probability_network is None
        assert b.attributes["texture"] == 3  # the phantom's nodules are solid
        assert b.attributes_network == {"texture": a.attributes["texture"]} and a.attributes_network is None
        assert {k: v for k, v in b.attributes.items() if k != "texture"} == {
            k: v for k, v in a.attributes.items() if k != "texture"
        }


def test_old_spelling_of_the_centres_still_works_with_a_warning(phantom, make_predictor) -> None:
    image, affine, _ = phantom
    predictor = make_predictor()
    centres = [NODULES[1].center_ras_mm]
    new = predictor.predict(_image(image, affine), centers_ras=centres)
    with pytest.warns(FutureWarning, match="centers_ras"):
        old = predictor.predict(_image(image, affine), centres_ras=centres)
    assert [n.to_dict() for n in old.nodules] == [n.to_dict() for n in new.nodules]
    np.testing.assert_array_equal(old.labels, new.labels)


def _lopsided_net(threshold_net: type) -> type:
    """A stand-in whose malignancy and detection logits depend on where the foreground lies along the first axis (not
    mirror-symmetric): over the 8 mirror images the position term cancels."""
    from lung_nodule_mtl.constants import OutputKeys

    class LopsidedNet(threshold_net):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.heads = torch.nn.ModuleDict({str(OutputKeys.NODULE): torch.nn.Identity()})

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            out = super().forward(x)
            fg = (out[str(OutputKeys.MASK)] > 0).float()
            half = fg.shape[2] // 2
            lopsided = (fg[:, :, :half].mean(dim=(1, 2, 3, 4)) - fg[:, :, half:].mean(dim=(1, 2, 3, 4)))[:, None]
            out[str(OutputKeys.MALIGNANCY)] = 50.0 * lopsided
            out[str(OutputKeys.NODULE)] = fg.mean(dim=(1, 2, 3, 4))[:, None] * 400.0 - 4.0 + 30.0 * lopsided
            return out

    return LopsidedNet


def test_mirror_tta_averages_the_reported_heads_and_keeps_the_detection_score(phantom, threshold_net) -> None:
    """With ``mirror_tta`` and no candidate mirroring the reported malignancy is the mean over the 8 mirror images
    (the position term cancels), the detection probability and the operating point stay the single pass's; the
    masks of given centres are the mean too (equal here: the stand-in's mask is pointwise)."""
    LopsidedNet = _lopsided_net(threshold_net)
    image, affine, _ = phantom
    common = {"patch_size": (32, 32, 32), "max_diameter_mm": 40.0, "device": "cpu", "detection_threshold": None}
    plain = ScanPredictor(LopsidedNet(), **common).predict(_image(image, affine))
    net = LopsidedNet()
    mirrored_predictor = ScanPredictor(net, mirror_tta=True, mirror_candidates_above=None, **common)
    assert mirrored_predictor.settings()["mirror_tta"] is True
    assert mirrored_predictor.settings()["mirror_candidates_above"] is None
    mirrored = mirrored_predictor.predict(_image(image, affine))
    assert len(plain.nodules) == len(mirrored.nodules) == 2
    for a, b in zip(plain.nodules, mirrored.nodules, strict=True):
        assert a.detection_probability == b.detection_probability  # one pass: the operating point is unchanged
        assert a.center_world_mm_ras == b.center_world_mm_ras and a.volume_mm3 == b.volume_mm3
        assert b.malignancy_probability == pytest.approx(0.5, abs=1e-6)  # the lopsided term cancels over mirrors
    assert any(abs(a.malignancy_probability - 0.5) > 0.01 for a in plain.nodules)  # and it was there without
    # given centres: heads and masks mirrored (the stand-in's mask is pointwise: the same labels)
    centres = [NODULES[0].center_ras_mm]
    given_plain = ScanPredictor(LopsidedNet(), **common).predict(_image(image, affine), centers_ras=centres)
    given = mirrored_predictor.predict(_image(image, affine), centers_ras=centres)
    assert np.array_equal(given.labels, given_plain.labels)
    assert given.nodules[0].malignancy_probability == pytest.approx(0.5, abs=1e-6)
    assert abs(given_plain.nodules[0].malignancy_probability - 0.5) > 0.01


def test_candidates_above_the_floor_are_scored_mirrored(phantom, threshold_net) -> None:
    """``mirror_candidates_above``: a candidate whose one-pass detection probability reaches the floor is scored
    again over the 8 mirror images (the lopsided term cancels: its probability becomes the symmetric part's), and
    that score decides the operating point; one below the floor keeps its one pass."""
    from lung_nodule_mtl.constants import OutputKeys

    class LopsidedNet(_lopsided_net(threshold_net)):  # type: ignore[misc]
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            """Detection unsaturated, plus a term of the input's asymmetry along the first axis (the lung and the
            body around an off-centre crop), which flipping that axis negates."""
            out = super().forward(x)
            fg = (out[str(OutputKeys.MASK)] > 0).float()
            half = x.shape[2] // 2
            tilt = (x[:, :, :half].mean(dim=(1, 2, 3, 4)) - x[:, :, half:].mean(dim=(1, 2, 3, 4)))[:, None]
            out[str(OutputKeys.NODULE)] = 10.0 * fg.mean(dim=(1, 2, 3, 4))[:, None] - 1.0 + 10.0 * tilt
            return out

    image, affine, _ = phantom
    common = {"patch_size": (32, 32, 32), "max_diameter_mm": 40.0, "device": "cpu", "detection_threshold": None}
    plain = ScanPredictor(LopsidedNet(), **common).predict(_image(image, affine)).nodules
    assert len(plain) == 2
    scores = sorted(n.detection_probability for n in plain)
    floor = (scores[0] + scores[1]) / 2  # between the two candidates' one-pass scores

    def symmetric(predictor: ScanPredictor, centre: list[float]) -> float:
        """The detection probability without the lopsided term: the mean logit over the mirror images."""
        iso = predictor._resampler.to_isotropic(_image(image, affine))
        heads, _ = predictor._heads(iso, [centre], mirror=True)
        return float(heads[0]["nodule_prob"])

    predictor = ScanPredictor(LopsidedNet(), mirror_tta=True, mirror_candidates_above=floor, **common)
    assert predictor.settings()["mirror_candidates_above"] == pytest.approx(floor)
    result = predictor.predict(_image(image, affine))
    assert result.counts["candidates_mirrored"] == 1
    by_centre = {tuple(n.center_world_mm_ras): n for n in plain}
    changed = 0
    for n in result.nodules:
        one_pass = by_centre[tuple(n.center_world_mm_ras)].detection_probability
        if one_pass >= floor:
            expected = symmetric(predictor, list(n.center_world_mm_ras))
            assert n.detection_probability == pytest.approx(expected, abs=1e-6)
            changed += abs(n.detection_probability - one_pass) > 1e-3
        else:
            assert n.detection_probability == one_pass
        assert n.malignancy_probability == pytest.approx(0.5, abs=1e-6)  # every reported nodule's heads mirrored
    assert changed == 1  # the lopsided term was there in one pass
    # the mirrored score decides the operating point: a threshold between it and its one-pass score
    above = max(plain, key=lambda n: n.detection_probability)
    mirrored_score = symmetric(predictor, list(above.center_world_mm_ras))
    cut = (mirrored_score + above.detection_probability) / 2
    kept = ScanPredictor(
        LopsidedNet(), mirror_tta=True, mirror_candidates_above=floor, **{**common, "detection_threshold": cut}
    ).predict(_image(image, affine))
    plain_kept = ScanPredictor(LopsidedNet(), **{**common, "detection_threshold": cut}).predict(_image(image, affine))
    assert len(kept.nodules) != len(plain_kept.nodules)
    # no candidate mirroring without mirror_tta, or for a network without a detection head
    without_tta = ScanPredictor(LopsidedNet(), mirror_candidates_above=floor, **common)
    without_head = ScanPredictor(threshold_net(), mirror_tta=True, mirror_candidates_above=floor, **common)
    assert without_tta.settings()["mirror_candidates_above"] is None
    assert without_head.settings()["mirror_candidates_above"] is None
    assert without_head.predict(_image(image, affine)).counts.get("candidates_mirrored") is None
    with pytest.raises(ValueError, match="mirror_candidates_above"):
        ScanPredictor(LopsidedNet(), mirror_candidates_above=1.5, **common)


def test_the_fusion_measures_the_centred_crop_mask_else_the_label_map(make_predictor) -> None:
    """As evaluating measures (and the fusion was fitted): the component at the centre of the nodule's crop mask,
    not the label map's (a whole-scan component can be cut short); the label map's where the crop has none."""
    from lung_nodule_mtl.inference.pipeline import _Found

    predictor = make_predictor()
    shape = (64, 64, 64)
    z, y, x = np.indices(shape) - 32.0
    hu = np.where(z**2 + y**2 + x**2 <= 36, 40.0, -850.0).astype(np.float32)  # a 12 mm nodule at the centre
    iso = MetaTensor(torch.from_numpy(hu)[None], affine=torch.eye(4, dtype=torch.float64))
    labels = (z**2 + y**2 + x**2 <= 9).astype(np.int32)  # the label map holds a 6 mm piece of it
    centre = [32.0, 32.0, 32.0]
    c = np.indices((32, 32, 32)) - 16.0
    crop = torch.from_numpy(((c**2).sum(0) <= 36).astype(np.float32))[None]  # the crop's mask: all of it
    found = _Found(labels, [centre], [{}], [0.9], "detected", crop_probs=crop)
    [m] = predictor._measure(iso, hu, found)
    assert m is not None and np.exp(m["log_diameter_mm"]) == pytest.approx(12.0, rel=0.05)
    assert m["hu_mean"] == pytest.approx(0.4)
    # no mask in the crop: the label map's component is measured
    [m] = predictor._measure(iso, hu, _Found(labels, [centre], [{}], [0.9], "detected", crop_probs=crop * 0))
    assert m is not None and np.exp(m["log_diameter_mm"]) == pytest.approx(6.0, rel=0.1)
    [m] = predictor._measure(iso, hu, _Found(labels * 0, [centre], [{}], [0.9], "detected", crop_probs=crop * 0))
    assert m is None


def test_fragments_of_one_nodule_are_reported_once(make_predictor, phantom) -> None:
    """``merge_fragments``: a candidate is folded into a more probable one only when each centre lies in the
    component at the centre of the other's crop mask (both crops see one object); its voxels join that label."""
    predictor = make_predictor(patch_size=(32, 32, 32))
    iso = MetaTensor(torch.zeros(1, 64, 64, 64), affine=torch.eye(4, dtype=torch.float64))
    centres = [[20.0, 32.0, 32.0], [28.0, 32.0, 32.0], [50.0, 32.0, 32.0]]  # voxel = world here
    i, j, k = np.indices((64, 64, 64))
    blob = (i >= 14) & (i <= 34) & (np.abs(j - 32) <= 4) & (np.abs(k - 32) <= 4)  # one elongated object
    crops = torch.zeros(3, 32, 32, 32)
    for n, c in enumerate(centres):  # each crop's view of the object (crop voxel = world - centre + 16)
        start = [int(v) - 16 for v in c]
        view = np.zeros((32, 32, 32), dtype=bool)
        src = tuple(slice(max(a, 0), min(a + 32, 64)) for a in start)
        dst = tuple(slice(max(-a, 0), max(-a, 0) + (min(a + 32, 64) - max(a, 0))) for a in start)
        view[dst] = blob[src]
        crops[n] = torch.from_numpy(view.astype(np.float32))
    crops[2, 14:19, 14:19, 14:19] = 1.0  # the third sees a small object of its own at its centre

    def components(probs: torch.Tensor) -> list:
        return [predictor._centre_component(p.numpy()) for p in probs]

    assert predictor._fragment_owners(iso, centres, components(crops)) == [0, 0, 2]
    one_sided = crops.clone()
    one_sided[1] = 0.0
    one_sided[1, 14:19, 14:19, 14:19] = 1.0  # the second's crop sees only its own small part: not A's centre
    assert predictor._fragment_owners(iso, centres, components(one_sided)) == [0, 1, 2]

    # the phantom's two nodules are two nodules: nothing merged, the same report as without merging
    image, affine, _ = phantom
    merged = make_predictor(max_diameter_mm=40.0).predict(_image(image, affine))
    plain = make_predictor(max_diameter_mm=40.0, merge_fragments=False).predict(_image(image, affine))
    assert merged.counts.get("fragments_merged") == 0 and len(merged.nodules) == len(plain.nodules) >= 2
    assert [n.to_dict() for n in merged.nodules] == [n.to_dict() for n in plain.nodules]
    np.testing.assert_array_equal(merged.labels, plain.labels)


def test_reported_masks_take_the_centred_crop_component(phantom, threshold_net) -> None:
    """``crop_masks``: a stand-in that segments more in the 32³ crops than in the 48³ sliding windows (a lower
    threshold, as a crop that sees a large nodule whole): the reported nodules' labels grow to the crops' component
    inside the lungs, and only with the option; the candidates, their scores and their number are the same."""

    class CropSeesMore(threshold_net):  # type: ignore[misc,valid-type]
        def segment(self, x: torch.Tensor) -> torch.Tensor:
            level = 0.42 if x.shape[-1] == 48 else 0.36  # windows 48³, crops 32³
            return 40.0 * (x[:, :1] - level)

    image, affine, _ = phantom
    common = {"patch_size": (32, 32, 32), "sw_roi_size": (48, 48, 48), "max_diameter_mm": 40.0, "device": "cpu"}
    grown = ScanPredictor(CropSeesMore(), keep_images=True, **common).predict(_image(image, affine))
    plain = ScanPredictor(CropSeesMore(), keep_images=True, crop_masks=False, **common).predict(_image(image, affine))
    assert grown.isotropic_labels is not None and plain.isotropic_labels is not None
    assert ScanPredictor(CropSeesMore(), **common).settings()["crop_masks"] is True
    assert len(grown.nodules) == len(plain.nodules) >= 2
    for g, p in zip(grown.nodules, plain.nodules, strict=True):
        assert g.detection_probability == p.detection_probability and g.label == p.label
        mine, before = grown.isotropic_labels == g.label, plain.isotropic_labels == p.label
        assert before[~mine].sum() == 0 and mine.sum() > before.sum()  # the sliding window's voxels, and more
        assert g.volume_mm3 > p.volume_mm3
    lung = grown.isotropic_lung
    assert lung is not None and not np.any((grown.isotropic_labels > 0) & ~lung)  # never outside the lungs
