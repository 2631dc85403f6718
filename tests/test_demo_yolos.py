"""The shipped demo detector ("demo-yolos"): its training boxes, loading it offline, and its benchmark.

The boxes are checked against the masks pixel by pixel; the loaded detector against the ground-truth
boxes of held-out images (a random YOLOS would not find them), and its maps against a forward pass of
the checkpoint loaded by ``transformers`` itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_vit_rollout import RolloutExplainer
from hf_vit_rollout.demo.data import CLASSES, HELD_OUT_SEED, detection_targets, make_sample, mask_boxes

ROOT = Path(__file__).resolve().parents[1]


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def test_mask_boxes_enclose_their_masks_exactly():
    for seed in range(40):
        sample = make_sample(seed)
        boxes = mask_boxes(sample.masks)
        assert boxes.shape == (len(sample.labels), 4)
        for mask, (x0, y0, x1, y1) in zip(sample.masks, boxes):
            x0, y0, x1, y1 = int(x0), int(y0), int(x1), int(y1)
            inside = np.zeros_like(mask)
            inside[y0:y1, x0:x1] = True
            assert mask.sum() > 0 and not (mask & ~inside).any()  # every mask pixel inside its box
            # tight: each edge row / column of the box holds a mask pixel
            assert mask[y0, x0:x1].any() and mask[y1 - 1, x0:x1].any()
            assert mask[y0:y1, x0].any() and mask[y0:y1, x1 - 1].any()
    one = np.zeros((1, 5, 7), dtype=bool)
    one[0, 3, 2] = True  # a single pixel at x=2, y=3
    assert mask_boxes(one).tolist() == [[2, 3, 3, 4]]
    with pytest.raises(ValueError, match="mask 1 is empty"):
        mask_boxes(np.stack([one[0], np.zeros((5, 7), dtype=bool)]))


def test_detection_targets_are_the_mask_boxes_in_normalised_cxcywh():
    for seed in range(10):
        sample = make_sample(seed)
        labels, boxes = detection_targets(sample)
        assert labels == sample.labels
        size = sample.image.size[0]
        for (cx, cy, w, h), mask in zip(boxes, sample.masks):
            rows, cols = np.nonzero(mask)
            np.testing.assert_allclose([(cx - w / 2) * size, (cy - h / 2) * size, (cx + w / 2) * size, (cy + h / 2) * size],
                                       [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], atol=1e-4)


def _benchmark():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import detection_localization
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return detection_localization


@pytest.fixture(scope="module")
def explainer():
    # local_files_only: the shipped checkpoint loads without the Hub
    return RolloutExplainer.from_pretrained("demo-yolos", local_files_only=True)


def test_demo_yolos_loads_offline_and_finds_the_shapes(explainer):
    import transformers as T

    assert Path(explainer.model.name_or_path) == ROOT / "src" / "hf_vit_rollout" / "demo" / "checkpoint_yolos"
    assert type(explainer.model).__name__ == "YolosForObjectDetection" and explainer.is_detector
    assert [explainer.id2label[i] for i in range(len(CLASSES))] == list(CLASSES)
    samples = [make_sample(HELD_OUT_SEED + 100 + i, num_objects=2) for i in range(4)]
    found = explainer([s.image for s in samples], method="gae", min_score=0.5)
    reference = T.YolosForObjectDetection.from_pretrained(explainer.model.name_or_path).eval()
    hits = objects = 0
    for sample, exps in zip(samples, found):
        truth = mask_boxes(sample.masks)
        objects += len(truth)
        for label, box in zip(sample.labels, truth):
            hits += any(e.target == label and _iou(e.box, box) >= 0.5 for e in exps)
        pixels = explainer.image_processor(images=sample.image, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            probs = reference(pixel_values=pixels).logits.softmax(-1)[0, :, :-1]
        for e in exps:
            assert e.box is not None and e.heatmap.shape == (64, 64) and e.heatmap.max() > 0
            assert e.label == CLASSES[e.target] and e.score == pytest.approx(float(probs[e.detection].max()), rel=1e-5)
    assert hits >= objects - 1  # the trained detector finds (nearly) every shape, with its class


def test_detection_localization_benchmark_prints_a_row_per_method(capsys):
    bench = _benchmark()
    bench.main(["--images", "3", "--methods", "rollout", "gae", "--threads", "1"])
    out = capsys.readouterr().out
    assert "3 held-out two-object images, 6 objects" in out
    rows = {line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ") and "%" in line}
    assert rows == {"random heat-map", "rollout", "gae"}


def test_the_benchmark_matches_each_object_to_its_own_detection(explainer):
    bench = _benchmark()
    samples = [make_sample(bench.BENCHMARK_SEED + i, num_objects=2) for i in range(4)]
    found = bench.detections(explainer, [s.image for s in samples])
    pixels = explainer.image_processor(images=[s.image for s in samples], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = explainer.model(pixel_values=pixels)
    matched = 0
    for b, (sample, rows) in enumerate(zip(samples, found)):
        assert sorted(r[0] for r in rows) == list(range(explainer.model.config.num_detection_tokens))
        truth = mask_boxes(sample.masks)
        for k, d in bench.match(rows, sample.labels, truth):
            cx, cy, w, h = (out.pred_boxes[b, d] * 64).tolist()
            assert int(out.logits[b, d, :-1].argmax()) == sample.labels[k]
            assert _iou((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), truth[k]) >= 0.5
            matched += 1
    assert matched >= 6  # of the 8 objects: the test really checks matches


def test_box_share_counts_the_mass_inside_the_boxes():
    bench = _benchmark()
    heat = np.zeros((8, 8))
    heat[1, 1], heat[1, 6], heat[6, 6] = 1.0, 2.0, 5.0
    assert bench.box_share(heat, [(0, 0, 2, 2)]) == pytest.approx(1 / 8)
    assert bench.box_share(heat, [(5, 0, 8, 2), (5, 5, 8, 8)]) == pytest.approx(7 / 8)
    assert bench.box_share(heat, [(0, 0, 8, 8), (5, 5, 8, 8)]) == pytest.approx(1.0)  # overlap counted once
    outside = np.zeros((8, 8))
    outside[6, 6] = 1.0  # in neither box: a tie, counted half
    row = bench.score([heat, heat, outside], [0, 1, 0], [[(0, 0, 2, 2), (5, 0, 8, 2)]] * 3)
    assert row["own"] == pytest.approx((1 / 8 + 2 / 8) / 3) and row["other"] == pytest.approx((2 / 8 + 1 / 8) / 3)
    assert row["wins"] == pytest.approx((0 + 1 + 0.5) / 3) and row["pairs"] == 3


def _script():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import train_demo_yolos
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return train_demo_yolos


def test_the_training_scripts_map_counts_hits_once_per_box_at_iou_half():
    script = _script()
    # ranked hits T, F, T of 2 boxes: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> AP 1/2 + 1/2 * 2/3
    assert script.average_precision([0.7, 0.9, 0.8], [True, True, False], 2) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # hits T, F, F, T, T of 3 boxes: precision 1, 1/2, 1/3, 1/2, 3/5; interpolated, the recall steps
    # 2/3 and 1 both take the best precision at or after them (3/5)
    scores, hits = [0.9, 0.8, 0.7, 0.6, 0.5], [True, False, False, True, True]
    assert script.average_precision(scores, hits, 3) == pytest.approx((1 + 3 / 5 + 3 / 5) / 3)
    assert script.average_precision(scores, hits, 4) == pytest.approx((1 + 3 / 5 + 3 / 5) / 4)  # a box never found
    box = np.array([[10.0, 10.0, 30.0, 30.0]])
    shifted = np.array([[10.0, 10.0, 30.0, 40.0]])  # IoU 2/3
    far = np.array([[40.0, 40.0, 60.0, 60.0]])
    predictions = [(np.array([0.9, 0.8, 0.6]), np.array([1, 1, 2]), np.concatenate([shifted, box, far]))]
    truths = [([1, 2], np.concatenate([box, box]))]
    quality = script.detection_quality(predictions, truths)
    # class 1: the first detection hits (IoU 2/3), the duplicate is a false positive -> AP 1;
    # class 2: its one detection misses -> AP 0
    assert quality["map50"] == pytest.approx(0.5) and quality["boxes"] == 2
    # mean IoU: class 1's best confident detection is the exact box (1), class 2's is far (0)
    assert quality["mean_iou"] == pytest.approx(0.5)
    assert script.box_iou(box, shifted)[0, 0] == pytest.approx(2 / 3)
    np.testing.assert_allclose(script.cxcywh_to_xyxy([[0.5, 0.25, 0.2, 0.1]]), [[0.4, 0.2, 0.6, 0.3]])


def test_match_takes_the_most_confident_same_class_detection_on_the_box_once():
    bench = _benchmark()
    box, other = (10.0, 10.0, 30.0, 30.0), (40.0, 40.0, 60.0, 60.0)
    rows = [(0, 1, 0.9, other), (1, 2, 0.8, box), (2, 1, 0.7, (10.0, 10.0, 30.0, 38.0)), (3, 1, 0.6, box)]
    # object 0 (class 1): detection 0 is off the box, detection 1 the wrong class, detection 2 overlaps
    # at IoU 20*20 / 20*28 = 0.71; object 1 (class 3) has no detection of its class
    assert bench.match(rows, [1, 3], [box, other]) == [(0, 2)]
    # two objects of one class on the same box: each detection is used once
    assert bench.match(rows, [1, 1], [box, box]) == [(0, 2), (1, 3)]
    # IoU 0.71 is below a 0.75 threshold: detection 3 (exact) is the match
    assert bench.match(rows, [1], [box], iou_threshold=0.75) == [(0, 3)]


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same kernels in both runs
    yield
    torch.set_num_threads(threads)


def test_training_resumes_from_its_state_file_to_the_same_weights(tmp_path, monkeypatch, one_thread):
    script = _script()
    processor = script.build_processor()

    def args(state):
        return script.make_parser("", 4, 2, 1e-3, 0, tmp_path).parse_args(["--state", str(state), "--state-every", "2"])

    whole = script.build_model(0)
    script.train(whole, processor, args(tmp_path / "whole.state"))

    calls, real_batch = [], script.batch

    def interrupted(*a, **k):  # the run dies on its third step, after the state of step 2 was saved
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_batch(*a, **k)

    monkeypatch.setattr(script, "batch", interrupted)
    first = script.build_model(0)
    with pytest.raises(KeyboardInterrupt):
        script.train(first, processor, args(tmp_path / "split.state"))
    assert torch.load(tmp_path / "split.state", weights_only=False)["step"] == 2
    monkeypatch.setattr(script, "batch", real_batch)
    resumed = script.build_model(1)  # other initial weights: the state file must replace them
    script.train(resumed, processor, args(tmp_path / "split.state"))
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    moved = [name for (name, a), b in zip(whole.state_dict().items(), script.build_model(0).state_dict().values()) if not torch.equal(a, b)]
    assert moved  # the four steps did train
