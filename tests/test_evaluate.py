"""``evaluate``, its report and the ``evaluate`` command, on the demo model and tiny random checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from hf_vit_rollout import EvaluationReport, RolloutExplainer, evaluate
from hf_vit_rollout.cli import main as cli_main
from hf_vit_rollout.demo.data import HELD_OUT_SEED, make_sample
from hf_vit_rollout.evaluation import ROAD, Deletion, Insertion, MethodConfig
from hf_vit_rollout.evaluation.data import masks_to_input
from hf_vit_rollout.evaluation.model import Baselines, gaussian_blur, randomised_copy

SEED = HELD_OUT_SEED + 8_000_000


@pytest.fixture(scope="module")
def demo():
    return RolloutExplainer.from_pretrained("demo")


@pytest.fixture(scope="module")
def samples():
    return [make_sample(SEED + i) for i in range(8)]


def inputs(samples):
    return [s.image for s in samples], [s.labels for s in samples], [s.masks for s in samples]


def test_trained_methods_beat_a_random_map_on_ground_truth(demo, samples):
    images, targets, masks = inputs(samples)
    metrics = ["pointing_game", "energy", "class_sensitivity", "deletion", "insertion", "sparseness", "complexity"]
    report = evaluate(demo, images, targets, masks, methods=["random", "gae"], metrics=metrics, progress=False)
    pairs = sum(len(s.labels) for s in samples)
    two = sum(len(s.labels) == 2 for s in samples)
    assert isinstance(report, EvaluationReport) and len(report.items) == pairs
    assert report.counts()["class_sensitivity"] == 2 * two and report.counts()["deletion"] == pairs
    means = report.summary()
    assert means["gae"]["pointing_game"] > means["random"]["pointing_game"] + 0.4
    assert means["gae"]["energy"] > means["random"]["energy"] + 0.2
    assert means["gae"]["deletion"] < means["random"]["deletion"] - 0.1
    assert means["gae"]["insertion"] > means["random"]["insertion"]
    assert means["gae"]["sparseness"] > means["random"]["sparseness"]  # random maps are flat-ish
    assert report.curves["gae"]["deletion"].shape == (pairs, 17)
    assert report.forward_passes["deletion"] == 17 and report.forward_passes["pointing_game"] == 0
    assert [it["target"] for it in report.items] == [label for s in samples for label in s.labels]


def test_results_do_not_depend_on_the_batch_size(demo, samples):
    images, targets, _ = inputs(samples[:3])
    metrics = [Deletion(steps=4), Insertion(steps=4, baseline="blur"), ROAD(True, fractions=(0.25, 0.5)), "complexity"]
    kwargs = dict(methods=["rollout", "random"], metrics=metrics, progress=False)
    small, large = evaluate(demo, images, targets, batch_size=3, **kwargs), evaluate(demo, images, targets, batch_size=64, **kwargs)
    for method in small.methods:
        for metric in small.metrics:
            np.testing.assert_allclose(small.values[method][metric], large.values[method][metric], atol=1e-5)
    assert small.forward_passes["road_morf"] == 2 and small.forward_passes["insertion"] == 5


def test_without_targets_the_prediction_is_scored(demo, samples):
    images = [s.image for s in samples[:3]]
    report = evaluate(demo, images, methods=["rollout"], metrics=["deletion"], progress=False)
    predicted = demo.predict(images).argmax(-1).tolist()
    assert [it["target"] for it in report.items] == predicted
    assert report.curves["rollout"]["deletion"][:, 0] == pytest.approx(demo.predict(images).max(-1).values.numpy(), abs=1e-5)


def test_randomisation_check_leaves_the_users_model_unchanged(checkpoint, images):
    explainer = RolloutExplainer.from_pretrained(checkpoint("vit"))
    before = {k: v.clone() for k, v in explainer.model.state_dict().items()}
    rng_state = torch.random.get_rng_state()
    report = evaluate(explainer, images, methods=["rollout", "gae"], metrics=["randomisation"], progress=False)
    after = explainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(rng_state, torch.random.get_rng_state()) and not explainer.model.training
    rho = report.values["gae"]["randomisation"]
    assert rho.shape == (3,) and np.all(np.abs(rho) <= 1)
    copy_a, copy_b = randomised_copy(explainer.model, 5), randomised_copy(explainer.model, 5)
    name = next(k for k, v in before.items() if "layer" in k and v.dim() == 2)  # an attention/MLP weight
    assert torch.equal(copy_a.state_dict()[name], copy_b.state_dict()[name])  # seeded
    assert not torch.equal(copy_a.state_dict()[name], before[name])
    with pytest.raises(ValueError, match="has the model's own weights"):
        randomised_copy(explainer.model, 0)  # the test checkpoint was itself initialised with seed 0
    assert report.forward_passes["randomisation"] == 1


def test_baselines(demo):
    pixels = torch.rand(3, 64, 64) * 2 - 1
    baselines = Baselines(demo.image_processor)
    assert torch.all(baselines("grey", pixels) == 0)  # mean 0.5, std 0.5: grey is 0
    assert torch.allclose(baselines("mean", pixels)[:, 5, 7], pixels.mean(dim=(1, 2)))
    flat = torch.full((3, 20, 30), 0.3)
    assert torch.allclose(gaussian_blur(flat, 2.0), flat) and gaussian_blur(pixels, 1.0).std() < pixels.std()


def test_masks_follow_the_processors_resize_and_centre_crop(checkpoint):
    explainer = RolloutExplainer.from_pretrained(checkpoint("deit"))  # resize to 40×40, centre crop 32×32
    left_half = np.zeros((50, 60), bool)
    left_half[:, :30] = True  # → columns 0-19 of 40 → columns 0-15 of the crop (offset 4)
    moved = masks_to_input([left_half], explainer.image_processor)
    assert moved.shape == (1, 32, 32) and moved[0, :, :16].all() and not moved[0, :, 16:].any()


def test_folder_inputs_pair_masks_by_stem(demo, tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "mask").mkdir()
    for i in range(3):
        sample = make_sample(SEED + 100 + i, num_objects=1)
        sample.image.save(tmp_path / "img" / f"s{i}.jpg")
        Image.fromarray(sample.masks[0]).save(tmp_path / "mask" / f"s{i}.png")
    report = evaluate(demo, tmp_path / "img", masks=tmp_path / "mask", methods=["gae"], metrics=["pointing_game"], progress=False)
    assert [it["image"] for it in report.items] == ["s0", "s1", "s2"]
    (tmp_path / "mask" / "s1.png").unlink()
    with pytest.raises(ValueError, match="no mask .* for s1.jpg"):
        evaluate(demo, tmp_path / "img", masks=tmp_path / "mask", methods=["gae"], progress=False)
    Image.new("L", (10, 10)).save(tmp_path / "mask" / "s1.png")
    with pytest.raises(ValueError, match="mask is 10×10 but the image is 64×64"):
        evaluate(demo, tmp_path / "img", masks=tmp_path / "mask", methods=["gae"], progress=False)


def test_dataset_input_with_target_and_mask_columns(demo, samples):
    from datasets import Dataset
    from datasets import Image as ImageFeature

    singles = [make_sample(SEED + 200 + i, num_objects=1) for i in range(3)]
    dataset = Dataset.from_dict({
        "image": [s.image for s in singles],
        "label": [s.labels[0] for s in singles],
        "mask": [Image.fromarray(s.masks[0]) for s in singles],
    }).cast_column("image", ImageFeature()).cast_column("mask", ImageFeature())
    report = evaluate(demo, dataset, targets="label", masks="mask", methods=["gae"], metrics=["pointing_game", "energy"], progress=False)
    direct = evaluate(demo, [s.image for s in singles], [s.labels[0] for s in singles], [s.masks[0] for s in singles],
                      methods=["gae"], metrics=["pointing_game", "energy"], progress=False)
    for metric in ("pointing_game", "energy"):
        np.testing.assert_allclose(report.values["gae"][metric], direct.values["gae"][metric])
    with pytest.raises(ValueError, match="no such column"):
        evaluate(demo, dataset, targets="labels", progress=False)


def test_report_exports(demo, samples, tmp_path):
    images, targets, masks = inputs(samples[:3])
    methods = ["random", MethodConfig("rollout", "max", 0.9)]
    report = evaluate(demo, images, targets, masks, methods=methods, metrics=["deletion", "energy"], progress=False)
    table = str(report)
    assert "| rollout (max, discard 0.9) |" in table and "deletion ↓" in table and "forward passes" in table
    data = json.loads(report.to_json())
    assert data["summary"]["random"]["energy"] == pytest.approx(report.summary()["random"]["energy"], abs=1e-6)
    assert len(data["mean_curves"]["random"]["deletion"]["y"]) == 17 and len(data["per_item"]["random"]["energy"]) == len(report.items)
    figure = report.plot()
    assert len(figure.axes) == 2
    written = report.save(tmp_path / "out")
    assert [p.name for p in written] == ["report.md", "report.json", "report.png"] and all(p.stat().st_size > 0 for p in written)


def test_bad_requests_fail_before_any_work(demo, samples, checkpoint, images):
    pictures = [s.image for s in samples[:2]]
    with pytest.raises(ValueError, match="needs ground-truth masks"):
        evaluate(demo, pictures, metrics=["pointing_game"], progress=False)
    with pytest.raises(ValueError, match="several labelled objects"):
        evaluate(demo, pictures, [1, 2], [s.masks[:1] for s in samples[:2]], metrics=["class_sensitivity"], progress=False)
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate(demo, pictures, metrics=["accuracy"], progress=False)
    with pytest.raises(ValueError, match="unknown method"):
        evaluate(demo, pictures, methods=["gradcam"], progress=False)
    with pytest.raises(ValueError, match="baseline"):
        Deletion(baseline="black")
    with pytest.raises(ValueError, match="one entry per image"):
        evaluate(demo, pictures, targets=[1, 2, 3], progress=False)
    with pytest.raises(ValueError, match="2 masks for 1 targets|several masks but one target"):
        evaluate(demo, pictures[:1], targets=[1], masks=[samples[0].masks.repeat(2, axis=0)[:2]], progress=False)
    backbone = RolloutExplainer.from_pretrained(checkpoint("vit_backbone"))
    with pytest.raises(ValueError, match="no classifier head"):
        evaluate(backbone, images, methods=["rollout"], metrics=["deletion"], progress=False)


def write_folder(tmp_path, count=2):
    for name in ("img", "mask"):
        (tmp_path / name).mkdir(exist_ok=True)
    for i in range(count):
        sample = make_sample(SEED + 300 + i, num_objects=1)
        sample.image.save(tmp_path / "img" / f"p{i}.png")
        Image.fromarray(sample.masks[0]).save(tmp_path / "mask" / f"p{i}.png")


def test_cli_writes_table_plots_and_json(tmp_path, capsys):
    write_folder(tmp_path)
    out = tmp_path / "report"
    code = cli_main(["evaluate", "--images", str(tmp_path / "img"), "--masks", str(tmp_path / "mask"),
                     "--methods", "random", "rollout:max:0.9", "--steps", "4", "--baseline", "mean", "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| rollout (max, discard 0.9) |" in printed and "pointing_game ↑" in printed
    data = json.loads((out / "report.json").read_text())
    assert data["settings"]["deletion"] == {"steps": 4, "baseline": "mean"} and data["num_items"] == 2
    assert (out / "report.png").stat().st_size > 0 and (out / "report.md").read_text().startswith("| method |")


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_mask", "no mask in"),
        ("out_is_a_file", "cannot write to the output folder"),
        ("bad_method", "unknown method"),
        ("no_images", "is not a folder"),
        ("bad_metric", "invalid choice: 'accuracy'"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys, case, message):
    write_folder(tmp_path)
    if case == "missing_mask":
        (tmp_path / "mask" / "p1.png").unlink()
    args = ["evaluate", "--images", str(tmp_path / "img"), "--masks", str(tmp_path / "mask"), "--out", str(tmp_path / "o"), "--quiet"]
    if case == "out_is_a_file":
        (tmp_path / "taken").write_text("x")
        args = [*args[:-3], "--out", str(tmp_path / "taken" / "sub"), "--model", str(tmp_path / "no-such-model"), "--quiet"]
    if case == "bad_method":
        args += ["--methods", "gradcam"]
    if case == "no_images":
        args[2] = str(tmp_path / "nothing")
    if case == "bad_metric":
        args += ["--metrics", "accuracy"]
        with pytest.raises(SystemExit) as exit_:
            cli_main(args)
        assert exit_.value.code == 2
    else:
        assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hf-vit-rollout: error: ") and message in err and "\n" not in err
