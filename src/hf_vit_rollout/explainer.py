"""The user-facing facade: load a checkpoint, explain images.

``preprocess → capture (forward [+ backward]) → method → postprocess``. Inputs and settings are
validated here, once, with messages that say what to do; everything below trusts its arguments.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import math
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .capture import AttentionCapture, CaptureError, find_attention_modules
from .errors import TargetError, UnsupportedModelError
from .explanation import Explanation
from .images import load_images
from .methods import METHODS, MethodSpec, check_head_fusion, flow_from_layers
from .methods.chain import ChainFold
from .tokens import TokenLayout

logger = logging.getLogger(__name__)

#: Name that :meth:`RolloutExplainer.from_pretrained` resolves to the checkpoint shipped in the package.
DEMO_MODEL = "demo"

_HUB_KWARGS = (
    "cache_dir",
    "force_download",
    "local_files_only",
    "proxies",
    "revision",
    "subfolder",
    "token",
    "trust_remote_code",
)

_model_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_model_locks_guard = threading.Lock()


def demo_model_path() -> Path:
    """Directory of the shipped demo checkpoint (a standard Hugging Face checkpoint folder)."""
    return Path(__file__).resolve().parent / "demo" / "checkpoint"


def _lock_for(model: torch.nn.Module) -> threading.RLock:
    """One lock per model object: calls that share a model run one at a time (hooks are per model)."""
    with _model_locks_guard:
        lock = _model_locks.get(model)
        if lock is None:
            lock = _model_locks[model] = threading.RLock()
        return lock


def _check_method(method: str) -> MethodSpec:
    if method not in METHODS:
        close = difflib.get_close_matches(str(method), METHODS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown method {method!r}{hint}; choose one of {', '.join(METHODS)}")
    return METHODS[method]


def _check_discard_ratio(discard_ratio) -> float:
    if isinstance(discard_ratio, bool) or not isinstance(discard_ratio, (int, float)):
        raise ValueError(f"discard_ratio must be a number in [0, 1), got {discard_ratio!r}")
    if not math.isfinite(discard_ratio) or not 0.0 <= discard_ratio < 1.0:
        raise ValueError(
            f"discard_ratio must lie in [0, 1) (the fraction of weakest attentions dropped per layer), got {discard_ratio}"
        )
    return float(discard_ratio)


def _check_rollout_buffer_mib(rollout_buffer_mib) -> float:
    if isinstance(rollout_buffer_mib, bool) or not isinstance(rollout_buffer_mib, (int, float)) or not rollout_buffer_mib >= 0:
        raise ValueError(f"rollout_buffer_mib must be a number >= 0 (MiB), got {rollout_buffer_mib!r}")
    return float(rollout_buffer_mib)


def _similarity_to_first_text(outputs) -> torch.Tensor:
    """``(B,)`` image-text similarity logits of every image with the (single) text."""
    return outputs.logits_per_image[:, 0]


def _input_box(processor, width: int, height: int) -> tuple[float, float, float, float]:
    """``(left, top, right, bottom)`` of the original image that the processor fed to the model.

    Handles the resize-then-centre-crop pipelines of the ViT-family processors; without a crop the
    whole image is used.
    """
    if not getattr(processor, "do_center_crop", False) or getattr(processor, "crop_size", None) is None:
        return 0.0, 0.0, float(width), float(height)
    size = getattr(processor, "size", None)
    res_w, res_h = float(width), float(height)
    if getattr(processor, "do_resize", False) and size is not None:
        shortest = getattr(size, "shortest_edge", None)
        if getattr(size, "height", None) and getattr(size, "width", None):
            res_h, res_w = float(size.height), float(size.width)
        elif shortest:
            short, long_ = (width, height) if width <= height else (height, width)
            new_long = int(shortest * long_ / short)
            res_w, res_h = (shortest, new_long) if width <= height else (new_long, shortest)
    crop_h, crop_w = float(processor.crop_size.height), float(processor.crop_size.width)
    top = max((res_h - crop_h) // 2, 0.0)
    left = max((res_w - crop_w) // 2, 0.0)
    sx, sy = width / res_w, height / res_h
    return (
        left * sx,
        top * sy,
        min(left + crop_w, res_w) * sx,
        min(top + crop_h, res_h) * sy,
    )


def _upsample(mask: np.ndarray, image_size: tuple[int, int], box) -> np.ndarray:
    """``(gh, gw)`` mask → ``(H, W)`` heat-map over ``box`` of an image of ``image_size = (W, H)``."""
    width, height = image_size
    left, top, right, bottom = (int(round(v)) for v in box)
    heat = np.zeros((height, width), dtype=np.float32)
    out_h, out_w = max(bottom - top, 1), max(right - left, 1)
    up = torch.nn.functional.interpolate(
        torch.from_numpy(mask)[None, None], size=(out_h, out_w), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    heat[top : top + out_h, left : left + out_w] = up[: height - top, : width - left]
    return np.clip(heat, 0.0, 1.0)


class RolloutExplainer:
    """Explain a Hugging Face ViT-family model's predictions with attention-based methods.

    Args:
        model: a ``transformers`` vision transformer (``ViTForImageClassification``, ``DeiT...``,
            ``Dinov2...``, a backbone such as ``ViTModel``, ...). It is never changed by a call:
            the attention implementation, ``training`` flags and hooks are restored afterwards.
        image_processor: the model's image processor.
        method: default method: ``"rollout"``, ``"grad_rollout"``, ``"gae"`` or ``"flow"``.
        head_fusion: ``"mean"``, ``"min"`` or ``"max"``.
        discard_ratio: fraction of the weakest attentions dropped per layer, in ``[0, 1)``; ``None``
            uses the method's default (0.9 for rollout, grad_rollout and flow, as the original tool; 0 for GAE).
        device: move the model there (``"cpu"``, ``"cuda"``, ...); ``None`` keeps it where it is.
        interpolate_pos_encoding: pass ``interpolate_pos_encoding=True`` to the model so inputs of
            another size than it was trained on work (processors that resize make this unnecessary).
        batch_size: images per forward pass.
        rollout_buffer_mib: memory ``"rollout"`` may use to hold the per-layer ``(B, N, N)`` maps
            until the last layer has run, so the output row is then folded through them at
            ``O(B·N²)`` cost per layer. Maps beyond it are multiplied into a running ``(B, N, N)``
            product instead (``B·N³`` per layer, about 7% of a DeiT-tiny forward pass). ``0``
            always multiplies (strictly ``O(B·N²)`` extra memory); ``math.inf`` never does. The
            gradient methods fold last layer first and need no buffer.

    Calls that share one model are serialised with a per-model lock, so one explainer may be used
    from several threads; they run one at a time and each gets its own correct maps.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        image_processor,
        method: str = "rollout",
        head_fusion: str = "mean",
        discard_ratio: float | None = None,
        device: str | torch.device | None = None,
        interpolate_pos_encoding: bool = False,
        batch_size: int = 32,
        tokenizer=None,
        rollout_buffer_mib: float = 256.0,
    ):
        config = getattr(model, "config", None)
        if config is None:
            raise UnsupportedModelError(f"{type(model).__name__} is not a transformers model (it has no .config)")
        self._check_family(config)
        self.tokenizer = tokenizer
        self._attention_modules = find_attention_modules(self._vision_root(model))
        if not self._attention_modules:
            raise UnsupportedModelError(
                f"{type(model).__name__} has no global self-attention modules exposing attention maps, "
                "so attention rollout cannot explain it"
            )
        self.model = model
        self.image_processor = image_processor
        self.method = _check_method(method).name
        self.head_fusion = check_head_fusion(head_fusion)
        self.discard_ratio = None if discard_ratio is None else _check_discard_ratio(discard_ratio)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self.rollout_buffer_mib = _check_rollout_buffer_mib(rollout_buffer_mib)
        self.interpolate_pos_encoding = bool(interpolate_pos_encoding)
        if device is not None:
            self.model.to(device)

    @staticmethod
    def _vision_root(model):
        """The vision tower of an image-text model (CLIP, SigLIP), else the model itself."""
        return model.vision_model if hasattr(model, "text_model") and hasattr(model, "vision_model") else model

    @property
    def is_image_text_model(self) -> bool:
        """Whether the model scores images against texts (CLIP, SigLIP): ``text=`` targets work."""
        return self._vision_root(self.model) is not self.model

    @staticmethod
    def _check_family(config) -> None:
        try:
            TokenLayout.from_config(config, (1, 1))
        except ValueError as exc:
            raise UnsupportedModelError(str(exc)) from None

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        method: str = "rollout",
        head_fusion: str = "mean",
        discard_ratio: float | None = None,
        device: str | torch.device | None = None,
        interpolate_pos_encoding: bool = False,
        batch_size: int = 32,
        rollout_buffer_mib: float = 256.0,
        **hf_kwargs,
    ) -> RolloutExplainer:
        """Load model and image processor the ``transformers`` way and wrap them.

        Args:
            pretrained_model_name_or_path: a Hub id (``"facebook/deit-tiny-patch16-224"``), a local
                checkpoint directory, or ``"demo"`` for the model shipped with this package.
            **hf_kwargs: passed to ``transformers``' ``from_pretrained`` (``revision``, ``token``,
                ``cache_dir``, ``local_files_only``, ``dtype``, ...).

        Raises:
            UnsupportedModelError: the checkpoint is a CNN, Swin, or another architecture without
                global self-attention (checked from its config, before the weights are loaded).
            OSError: the checkpoint cannot be found (``transformers``' message, with a hint).
        """
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

        _check_method(method)
        check_head_fusion(head_fusion)
        if discard_ratio is not None:
            _check_discard_ratio(discard_ratio)
        _check_rollout_buffer_mib(rollout_buffer_mib)
        source = demo_model_path() if str(pretrained_model_name_or_path) == DEMO_MODEL else pretrained_model_name_or_path
        hub_kwargs = {k: v for k, v in hf_kwargs.items() if k in _HUB_KWARGS}
        text = str(source)
        if (Path(text).is_absolute() or text.startswith((".", "~"))) and not Path(text).expanduser().is_dir():
            raise OSError(
                f"could not load a checkpoint from {text!r}: no such directory. Pass an existing checkpoint "
                f"directory (with config.json), a Hub id, or {DEMO_MODEL!r}."
            )
        try:
            config = AutoConfig.from_pretrained(source, **hub_kwargs)
        except OSError as exc:
            raise OSError(
                f"could not load a checkpoint from {str(pretrained_model_name_or_path)!r}: {exc}\n"
                "Pass an existing local checkpoint directory, a Hub id reachable from this machine "
                f"(offline: one already in the cache, with local_files_only=True), or {DEMO_MODEL!r}."
            ) from exc
        cls._check_family(config)
        architectures = getattr(config, "architectures", None) or []
        is_classifier = any("ForImageClassification" in a for a in architectures)
        auto = AutoModelForImageClassification if is_classifier else AutoModel
        model = auto.from_pretrained(source, **hf_kwargs)
        processor = AutoImageProcessor.from_pretrained(source, backend="pil", **hub_kwargs)
        tokenizer = None
        if getattr(config, "text_config", None) is not None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(source, **hub_kwargs)
        return cls(
            model,
            processor,
            method=method,
            head_fusion=head_fusion,
            discard_ratio=discard_ratio,
            device=device,
            interpolate_pos_encoding=interpolate_pos_encoding,
            batch_size=batch_size,
            tokenizer=tokenizer,
            rollout_buffer_mib=rollout_buffer_mib,
        )

    # ------------------------------------------------------------------ labels and targets
    @property
    def id2label(self) -> dict[int, str]:
        """Class index → name, from the model config (empty for backbones without a classifier)."""
        if not self._has_classifier:
            return {}
        return {int(k): str(v) for k, v in (getattr(self.model.config, "id2label", None) or {}).items()}

    @property
    def _has_classifier(self) -> bool:
        return hasattr(self.model, "classifier") or hasattr(self.model, "cls_classifier")

    @property
    def num_labels(self) -> int:
        return int(getattr(self.model.config, "num_labels", 0)) if self._has_classifier else 0

    def resolve_target(self, target: int | str) -> int:
        """A class index or label name → class index.

        Label names match case-insensitively, also against each comma-separated synonym of an
        ImageNet-style label (``"tabby"`` finds ``"tabby, tabby cat"``).

        Raises:
            TargetError: out-of-range index, or unknown name (with the closest names suggested).
        """
        if self.num_labels == 0:
            raise TargetError(
                f"{type(self.model).__name__} has no classifier head, so there is no class {target!r} to explain; "
                "load a *ForImageClassification checkpoint or pass target=callable(outputs) -> (B,) scores"
            )
        if isinstance(target, (bool, np.bool_)):
            raise TargetError(f"target must be a class index or label name, got {target!r}")
        if isinstance(target, (int, np.integer)):
            if not 0 <= int(target) < self.num_labels:
                raise TargetError(
                    f"target index {int(target)} is out of range: this model has {self.num_labels} classes "
                    f"(0 to {self.num_labels - 1})"
                )
            return int(target)
        if isinstance(target, str):
            names: dict[str, int] = {}
            for index, label in self.id2label.items():
                names.setdefault(label.lower(), index)
                for synonym in label.split(","):
                    names.setdefault(synonym.strip().lower(), index)
            key = target.strip().lower()
            if key in names:
                return names[key]
            close = difflib.get_close_matches(key, list(names), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise TargetError(f"unknown label {target!r}{hint} (the model has {self.num_labels} classes: see .id2label)")
        raise TargetError(f"target must be an int, a label name or a callable, got {type(target).__name__}")

    def _resolve_targets(self, target, count: int) -> list[int | None] | Callable:
        if target is None:
            return [None] * count
        if callable(target):
            return target
        if isinstance(target, (np.ndarray, torch.Tensor)):
            target = target.tolist()
        elif not isinstance(target, (str, bytes, list, tuple)) and hasattr(target, "__iter__") and hasattr(target, "__len__"):
            target = list(target)  # e.g. a datasets Column
        if isinstance(target, (list, tuple)):
            if len(target) != count:
                raise TargetError(f"got {len(target)} targets for {count} images; pass one target, or one per image")
            return [self.resolve_target(t) for t in target]
        return [self.resolve_target(target)] * count

    # ------------------------------------------------------------------ main entry
    def __call__(
        self,
        images,
        target=None,
        *,
        method: str | None = None,
        head_fusion: str | None = None,
        discard_ratio: float | None = None,
        text: str | None = None,
        progress: bool = False,
    ) -> Explanation | list[Explanation]:
        """Explain one image or a batch.

        Args:
            images: a path, URL, ``PIL.Image``, numpy ``(H, W[, C])`` array, torch ``(C, H, W)``
                tensor, a ``(B, C, H, W)`` tensor, or a list of these.
            target: for gradient methods, the class to explain: an index, a label name, a list with
                one per image, or a callable ``score(outputs) -> (B,)`` tensor. ``None`` explains
                the predicted class. Class-agnostic methods (``rollout``, ``flow``) take no target.
            method, head_fusion, discard_ratio: override the explainer's defaults for this call.
            text: for image-text models (CLIP): explain the image-text similarity with this text
                (``"a photo of a dog"``), with a gradient method. Exclusive with ``target``.
            progress: show a progress bar (over batches, and over sources for flow).

        Returns:
            One :class:`Explanation` for a single image, else a list in input order.
        """
        model_inputs = None
        if text is not None:
            model_inputs = self._text_inputs(text, target, self.method if method is None else method)
            target = _similarity_to_first_text
        spec, fusion, ratio = self._settings(method, head_fusion, discard_ratio, target)
        pil_images, single = load_images(images)
        targets = self._resolve_targets(target, len(pil_images))
        starts = range(0, len(pil_images), self.batch_size)
        if progress and len(starts) > 1:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="explaining", unit="batch")
        results: list[Explanation] = []
        for start in starts:
            stop = start + self.batch_size
            chunk_targets = targets if callable(targets) else targets[start:stop]
            results.extend(
                self._explain_batch(pil_images[start:stop], chunk_targets, spec, fusion, ratio, progress, model_inputs)
            )
        if text is not None:
            for result in results:
                result.label, result.params["text"] = text, text
        return results[0] if single else results

    def _text_inputs(self, text, target, method: str) -> dict:
        """Tokenised ``text`` for an image-text model, after checking the request makes sense."""
        if target is not None:
            raise TargetError("give either target= (a class) or text= (a description), not both")
        if not self.is_image_text_model or self.tokenizer is None:
            raise TargetError(
                f"text= needs an image-text model such as CLIP loaded with its tokenizer; {type(self.model).__name__} "
                "has no text tower (use target= with a class instead)"
            )
        if not isinstance(text, str) or not text.strip():
            raise TargetError(f"text must be a non-empty string, got {text!r}")
        if not _check_method(method).needs_gradient:
            raise TargetError(f"method {method!r} is class-agnostic; explain a text with method='grad_rollout' or 'gae'")
        return dict(self.tokenizer([text], padding=True, return_tensors="pt"))

    def _settings(self, method, head_fusion, discard_ratio, target) -> tuple[MethodSpec, str, float]:
        """Validate one call's settings against the explainer's defaults."""
        spec = _check_method(self.method if method is None else method)
        fusion = check_head_fusion(self.head_fusion if head_fusion is None else head_fusion)
        ratio = discard_ratio if discard_ratio is not None else self.discard_ratio
        ratio = spec.default_discard_ratio if ratio is None else _check_discard_ratio(ratio)
        if target is not None and not spec.needs_gradient:
            gradient_methods = [name for name, s in METHODS.items() if s.needs_gradient]
            raise TargetError(
                f"method {spec.name!r} is class-agnostic and takes no target; to explain class {target!r} "
                f"use a gradient method: method={gradient_methods[0]!r} or {gradient_methods[1]!r}"
            )
        return spec, fusion, ratio

    def relevance_maps(
        self,
        pixel_values: torch.Tensor,
        target=None,
        *,
        method: str | None = None,
        head_fusion: str | None = None,
        discard_ratio: float | None = None,
    ) -> torch.Tensor:
        """Patch relevance for already-preprocessed inputs (no image loading, no upsampling).

        For data pipelines and benchmarks that run their own preprocessing.

        Args:
            pixel_values: ``(B, C, H, W)`` model inputs, as the image processor makes them.
            target, method, head_fusion, discard_ratio: as for :meth:`__call__`.

        Returns:
            ``(B, grid_h, grid_w)`` float32 raw relevance (not rescaled), on the model's device.
        """
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4:
            raise ValueError("pixel_values must be a (B, C, H, W) tensor; use the explainer's __call__ for images")
        spec, fusion, ratio = self._settings(method, head_fusion, discard_ratio, target)
        targets = self._resolve_targets(target, pixel_values.shape[0])
        layout, relevance, _, _ = self._run(pixel_values, targets, spec, fusion, ratio, False)
        return layout.patch_relevance(relevance)

    # ------------------------------------------------------------------ one batch
    def _preprocess(self, pil_images) -> torch.Tensor:
        try:
            pixel_values = self.image_processor(images=pil_images, return_tensors="pt")["pixel_values"]
        except Exception as exc:  # processors raise many types for odd images
            raise ValueError(f"the image processor could not prepare the input: {exc}") from exc
        return pixel_values

    def _forward_kwargs(self) -> dict:
        if self.interpolate_pos_encoding and "interpolate_pos_encoding" in inspect.signature(self.model.forward).parameters:
            return {"interpolate_pos_encoding": True}
        return {}

    def _explain_batch(self, pil_images, targets, spec: MethodSpec, fusion: str, ratio: float, progress: bool, model_inputs=None):
        return self._explain_pixels(self._preprocess(pil_images), pil_images, targets, spec, fusion, ratio, progress, model_inputs)

    def _explain_pixels(self, pixel_values, pil_images, targets, spec: MethodSpec, fusion, ratio, progress, model_inputs=None):
        """Explanations for ``pil_images`` from their already-processed ``pixel_values``."""
        layout, relevance, logits, explained = self._run(pixel_values, targets, spec, fusion, ratio, progress, model_inputs)
        return self._postprocess(pil_images, layout, relevance, logits, explained, spec, fusion, ratio)

    def _on_model(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``pixel_values`` on the model's device, in its parameters' dtype."""
        param = next(self.model.parameters())
        return pixel_values.to(device=param.device, dtype=param.dtype)

    def predict(self, images) -> torch.Tensor:
        """Class probabilities, without explaining: ``(B, num_labels)`` (sigmoid or softmax, see
        :meth:`probabilities`). Accepts the same inputs as :meth:`__call__`.

        Raises:
            TargetError: the model has no classifier head.
        """
        if not self.num_labels:
            raise TargetError(f"{type(self.model).__name__} has no classifier head, so it predicts no classes")
        pil_images, _ = load_images(images)
        pixel_values = self._on_model(self._preprocess(pil_images))
        with torch.no_grad():
            logits = self.model(pixel_values=pixel_values, **self._forward_kwargs()).logits.float()
        return self.probabilities(logits)

    def _run(self, pixel_values, targets, spec: MethodSpec, fusion: str, ratio: float, progress: bool, model_inputs=None):
        """Forward (and backward) under capture. Returns ``(layout, (B, N) relevance, logits, targets)``."""
        pixel_values = self._on_model(pixel_values)
        layout = TokenLayout.from_config(self.model.config, tuple(pixel_values.shape[-2:]))
        weights = layout.output_weights(device=pixel_values.device)
        with _lock_for(self.model):
            relevance, logits, explained = self._capture(
                pixel_values, layout, weights, targets, spec, fusion, ratio, progress, model_inputs
            )
        return layout, relevance, logits, explained

    def _forward(self, pixel_values, model_inputs):
        """The model call: with text inputs for image-text scores, else the vision tower (or whole model)."""
        kwargs = self._forward_kwargs()
        if model_inputs:
            inputs = {k: v.to(pixel_values.device) for k, v in model_inputs.items()}
            return self.model(pixel_values=pixel_values, **inputs, **kwargs)
        return self._vision_root(self.model)(pixel_values=pixel_values, **kwargs)

    def _capture(self, pixel_values, layout: TokenLayout, weights, targets, spec: MethodSpec, fusion, ratio, progress, model_inputs=None):
        keep = layout.cls_index
        fold = None
        if spec.combine == "product":
            direction = "backward" if spec.needs_gradient else "forward"
            fold = ChainFold(weights, direction, buffer_bytes=self.rollout_buffer_mib * 2**20)
        stored: dict[int, torch.Tensor] = {}
        first_attention: list[torch.Tensor] = []

        def store(layer: int, layer_map: torch.Tensor) -> None:
            if fold is not None:
                fold.add(layer, layer_map)
            else:
                stored[layer] = layer_map

        def on_attention(layer: int, attention: torch.Tensor) -> None:
            if attention.shape[-1] != layout.num_tokens:
                raise CaptureError(
                    f"layer {layer} attends over {attention.shape[-1]} tokens, but the config describes "
                    f"{layout.num_prefix_tokens} prefix tokens + {layout.grid_size[0]}×{layout.grid_size[1]} patches "
                    f"= {layout.num_tokens}; the model's token layout is not supported"
                )
            frozen = attention.detach()
            if spec.needs_gradient:
                if not attention.requires_grad:
                    raise RuntimeError("attention maps carry no gradient; do not call the explainer under torch.inference_mode()")
                attention.register_hook(lambda grad: store(layer, spec.layer_map(frozen, grad, fusion, ratio, keep)))
                if layer == 0:
                    first_attention.append(attention)
            else:
                store(layer, spec.layer_map(frozen, None, fusion, ratio, keep))

        with AttentionCapture(
            self.model, on_attention, modules_root=self._vision_root(self.model), attention_modules=self._attention_modules
        ) as capture:
            with torch.enable_grad() if spec.needs_gradient else torch.no_grad():
                if spec.needs_gradient:
                    pixel_values = pixel_values.detach().requires_grad_(True)
                try:
                    outputs = self._forward(pixel_values, model_inputs)
                except ValueError as exc:
                    if "size" in str(exc) and not self.interpolate_pos_encoding:
                        raise ValueError(
                            f"{exc}. The processor produced {tuple(pixel_values.shape[-2:])} inputs; create the "
                            "explainer with interpolate_pos_encoding=True to explain other input sizes"
                        ) from exc
                    raise
                logits = getattr(outputs, "logits", None)
                explained = None
                if spec.needs_gradient:
                    scores, explained = self._scores(outputs, logits, targets)
                    fold.start_backward(capture.num_layers)
                    torch.autograd.grad(scores.sum(), first_attention)
            num_layers = capture.num_layers
        if num_layers == 0:
            raise CaptureError(f"no attention layer ran in {type(self.model).__name__}'s forward pass")
        if fold is not None:
            relevance = fold.relevance(num_layers)
        else:
            relevance = flow_from_layers([stored[i] for i in range(num_layers)], weights, progress=progress)
        logits = None if logits is None else logits.detach().float()
        return relevance.detach().float(), logits, explained

    def _scores(self, outputs, logits, targets):
        if callable(targets):
            scores = targets(outputs)
            if not isinstance(scores, torch.Tensor) or scores.dim() != 1 or scores.shape[0] != outputs[0].shape[0]:
                raise TargetError("a callable target must return a (B,) tensor of scores, one per image")
            return scores, [None] * scores.shape[0]
        if logits is None:
            raise TargetError(
                f"{type(self.model).__name__} has no classifier logits; pass target=callable(outputs) -> (B,) scores"
            )
        chosen = [int(logits[i].argmax()) if t is None else t for i, t in enumerate(targets)]
        index = torch.tensor(chosen, device=logits.device)
        return logits.gather(1, index[:, None]).squeeze(1), chosen

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, num_labels)`` logits → probabilities: sigmoid for multi-label models, else softmax."""
        if getattr(self.model.config, "problem_type", None) == "multi_label_classification":
            return logits.sigmoid()
        return logits.softmax(-1)

    def _postprocess(self, pil_images, layout, relevance, logits, explained, spec, fusion, ratio):
        patches = layout.patch_relevance(relevance).clamp(min=0).cpu().numpy().astype(np.float32)
        probabilities = None if logits is None else self.probabilities(logits).cpu().numpy()
        id2label = self.id2label
        results = []
        for i, image in enumerate(pil_images):
            patch = patches[i]
            peak = float(patch.max())
            if peak > 0:
                mask = patch / peak
            else:
                logger.warning("image %d: no patch received any relevance; the mask is all zeros", i)
                mask = np.zeros_like(patch)
            target = None if explained is None else explained[i]
            predicted = None if probabilities is None else int(probabilities[i].argmax())
            shown = target if target is not None else predicted
            results.append(
                Explanation(
                    image=image,
                    mask=mask.astype(np.float32),
                    heatmap=_upsample(mask, image.size, _input_box(self.image_processor, *image.size)),
                    method=spec.name,
                    target=target,
                    label=id2label.get(shown) if shown is not None else None,
                    score=None if probabilities is None or shown is None else float(probabilities[i, shown]),
                    predicted=predicted,
                    token_relevance=relevance[i].cpu().numpy(),
                    params={"head_fusion": fusion, "discard_ratio": ratio},
                )
            )
        return results
