"""What the evaluation needs from the model: batched target probabilities, baselines, a randomised copy."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

logger = logging.getLogger(__name__)


def probabilities(model: torch.nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """``(B, num_labels)`` logits → probabilities: sigmoid for multi-label models, else softmax."""
    if getattr(model.config, "problem_type", None) == "multi_label_classification":
        return logits.sigmoid()
    return logits.softmax(-1)


class FrameScorer:
    """Target probabilities of many perturbed inputs, ``batch_size`` inputs per forward pass.

    Counts the inputs it forwards in :attr:`count` (one forward pass per input image).
    """

    def __init__(self, explainer, batch_size: int):
        self.model = explainer.model
        self.explainer = explainer
        self.batch_size = batch_size
        self.count = 0
        wants = getattr(explainer, "interpolate_pos_encoding", False)
        takes = "interpolate_pos_encoding" in inspect.signature(self.model.forward).parameters
        self.kwargs = {"interpolate_pos_encoding": True} if wants and takes else {}

    def logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(K, C, H, W)`` → ``(K, num_labels)`` float logits on the CPU (no gradient)."""
        param = next(self.model.parameters())
        # a Swin's windows for this input size, shared only with calls that clamp them alike
        with self.explainer.windows_for(tuple(pixel_values.shape[-2:])), torch.no_grad():
            logits = self.model(pixel_values=pixel_values.to(param.device, param.dtype), **self.kwargs).logits
        self.count += pixel_values.shape[0]
        return logits.float().cpu()

    def _scores(self, frames: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
        probs = probabilities(self.model, self.logits(frames))
        return probs.gather(1, targets[:, None]).squeeze(1).numpy()

    def __call__(self, stacks: Iterable[tuple[torch.Tensor, int]]) -> list[np.ndarray]:
        """``(frames (S, C, H, W), target)`` pairs → one ``(S,)`` array of target probabilities each.

        Frames of consecutive stacks share forward passes; at most ``batch_size + S`` frames are held.
        """
        lengths, out, frames, targets, held = [], [], [], [], 0
        for stack, target in stacks:
            lengths.append(stack.shape[0])
            frames.append(stack)
            targets.append(torch.full((stack.shape[0],), int(target), dtype=torch.long))
            held += stack.shape[0]
            while held >= self.batch_size:
                x, t = torch.cat(frames), torch.cat(targets)
                out.append(self._scores(x[: self.batch_size], t[: self.batch_size]))
                frames, targets, held = [x[self.batch_size :]], [t[self.batch_size :]], held - self.batch_size
        if held:
            out.append(self._scores(torch.cat(frames), torch.cat(targets)))
        flat = np.concatenate(out) if out else np.zeros(0)
        return np.split(flat, np.cumsum(lengths)[:-1])


def _normalisation(processor) -> tuple[np.ndarray, np.ndarray]:
    if not getattr(processor, "do_normalize", False):
        return np.zeros(3), np.ones(3)
    mean = np.atleast_1d(np.asarray(processor.image_mean, dtype=np.float64))
    std = np.atleast_1d(np.asarray(processor.image_std, dtype=np.float64))
    return mean, std


def gaussian_blur(pixel_values: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(C, H, W)`` → the same blurred by a separable Gaussian of ``sigma`` pixels (reflected borders)."""
    radius = max(1, int(round(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(pixel_values)
    channels = pixel_values.shape[0]
    out = pixel_values[None]
    pad_h, pad_w = min(radius, out.shape[-2] - 1), min(radius, out.shape[-1] - 1)
    out = torch.nn.functional.pad(out, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    rows = kernel[radius - pad_h : radius + pad_h + 1].view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    cols = kernel[radius - pad_w : radius + pad_w + 1].view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    out = torch.nn.functional.conv2d(out, rows, groups=channels)
    return torch.nn.functional.conv2d(out, cols, groups=channels)[0]


@dataclass
class Baselines:
    """The "no information" input of deletion and insertion, in model-input space.

    ``grey``: mid-grey (0.5 of the pixel range) after the processor's normalisation; ``mean``: the
    image's own per-channel mean; ``blur``: the image blurred by a Gaussian of ``σ = 5·max(H, W)/224``
    pixels (σ = 5 at 224 px, as RISE's blurred baseline).
    """

    processor: object

    def __call__(self, kind: str, pixel_values: torch.Tensor) -> torch.Tensor:
        channels, height, width = pixel_values.shape
        if kind == "grey":
            mean, std = _normalisation(self.processor)
            grey = (0.5 - mean) / std
            grey = np.resize(grey, channels)  # one value per channel (a single value repeated)
            return torch.tensor(grey, dtype=pixel_values.dtype).view(channels, 1, 1).expand_as(pixel_values)
        if kind == "mean":
            return pixel_values.mean(dim=(1, 2), keepdim=True).expand_as(pixel_values)
        if kind == "blur":
            return gaussian_blur(pixel_values, 5.0 * max(height, width) / 224)
        raise ValueError(f"unknown baseline {kind!r}")


def randomised_copy(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A model of the same class and configuration with freshly initialised weights (seeded).

    The original model is untouched (its weights, mode and the global random state). Placed on the
    original's device and dtype, in eval mode.
    """
    import copy

    param = next(model.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            random_model = type(model)(copy.deepcopy(model.config))
        except Exception as exc:  # noqa: BLE001 - any constructor failure: fall back to re-initialising a copy
            logger.info("could not build %s from its config (%s); re-initialising a deep copy", type(model).__name__, exc)
            random_model = copy.deepcopy(model)
            for module in random_model.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
    random_model = random_model.to(device=param.device, dtype=param.dtype).eval()
    if all(torch.equal(a, b) for a, b in zip(model.parameters(), random_model.parameters())):
        raise ValueError(f"the randomised model with seed {seed} has the model's own weights; use another seed")
    return random_model
