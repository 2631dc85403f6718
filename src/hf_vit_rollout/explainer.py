"""The user-facing facade: load a checkpoint, explain images.

A call validates its settings once into an :class:`~hf_vit_rollout.request.ExplainRequest`, then
runs the shared stages (:mod:`hf_vit_rollout.stages`): ``preprocess → forward → postprocess``.
Calls may come from many threads at once: each capture records only its own thread's passes.
"""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from collections.abc import Iterator

import torch

from . import stages
from .capture import refuse_inside_target
from .errors import ExplanationWarning, TargetError, UnsupportedModelError
from .families import family_for
from .explanation import Explanation
from .images import image_sources
from .labels import label_index
from .loading import (
    DEMO_MODEL,
    HUB_KWARGS,
    check_family,
    demo_model_path,
    load_model,
    load_processors,
)
from .request import ExplainRequest, check_count, check_device, check_megabytes
from .tokens import TokenLayout, _pair, _vision_config, layout_from_config
from .window_capture import attention_setup, held_windows, kept_window_geometry
from .window_layout import WindowedLayout

logger = logging.getLogger(__name__)

__all__ = ["DEMO_MODEL", "RolloutExplainer", "demo_model_path"]


def _checked_config(model):
    """The model's config, checked to be an explainable family."""
    config = getattr(model, "config", None)
    if config is None:
        raise UnsupportedModelError(f"{type(model).__name__} is not a transformers model (it has no .config)")
    check_family(config)
    return config


def _processors_of(model, hub_kwargs: dict):
    """``(image_processor, tokenizer or None)`` of an already loaded model, from its ``name_or_path``."""
    source = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    if not source:
        raise ValueError(
            f"this {type(model).__name__} does not say where it was loaded from (no name_or_path), so its image "
            "processor cannot be found; pass image_processor=AutoImageProcessor.from_pretrained(...)"
        )
    try:
        return load_processors(source, **hub_kwargs)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"could not load the image processor of this {type(model).__name__} from its name_or_path {str(source)!r} "
            f"({str(exc).splitlines()[0]}); pass image_processor=AutoImageProcessor.from_pretrained(...)"
        ) from None


class RolloutExplainer:
    """Explain a Hugging Face ViT-family model's predictions with attention-based methods.

    Args:
        model: a ``transformers`` vision transformer (``ViTForImageClassification``, ``DeiT...``,
            ``Dinov2...``, a backbone such as ``ViTModel``, a windowed one such as
            ``SwinForImageClassification``, ...). It is never changed by a call: the attention
            implementation, ``training`` flags and Swin blocks' windows are restored afterwards.
        image_processor: the model's image processor.
        method: default method (see :data:`~hf_vit_rollout.METHODS`).
        head_fusion: ``"mean"``, ``"min"`` or ``"max"``.
        discard_ratio: fraction of the weakest attentions dropped per layer, in ``[0, 1)``; ``None``
            uses the method's default.
        device: move the model there (``"cpu"``, ``"cuda"``, ...); ``None`` keeps it where it is.
        interpolate_pos_encoding: pass ``interpolate_pos_encoding=True`` to the model so inputs of
            another size than it was trained on work.
        batch_size: images per forward pass.
        tokenizer: the text tokenizer of an image-text model (CLIP, SigLIP), for ``text=``.
        rollout_buffer_mib: memory ``"rollout"`` may use to hold per-layer ``(B, N, N)`` maps before
            folding them at ``O(B·N²)`` per layer; beyond it they are multiplied into a running
            product (``B·N³`` per layer). ``0`` always multiplies; ``math.inf`` never does.

    Thread safety: one explainer (and one model) may serve many threads at once; see
    :mod:`hf_vit_rollout.capture` for what other threads observe during a capture.
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
        config = _checked_config(model)
        self.defaults = ExplainRequest(method=method, head_fusion=head_fusion, discard_ratio=discard_ratio)
        self.batch_size = check_count(batch_size, "batch_size")
        self.rollout_buffer_mib = check_megabytes(rollout_buffer_mib, "rollout_buffer_mib")
        self.model, self.image_processor, self.tokenizer = model, image_processor, tokenizer
        self.vision_root = model.vision_model if hasattr(model, "text_model") and hasattr(model, "vision_model") else model
        model_type = getattr(_vision_config(config), "model_type", None)
        self.family = family_for(config)
        setup = self.family.attention_setup(self.vision_root) if self.family else attention_setup(self.vision_root, model_type)
        self.window_blocks, self.forward_kwargs, self.attention_modules = setup
        patch_size = getattr(self.family, "patch_size", None)
        self.patch_size = patch_size(_vision_config(config)) if patch_size else _pair(_vision_config(config).patch_size)
        self.interpolate_pos_encoding = bool(interpolate_pos_encoding)
        device = check_device(device)
        if device is not None:
            self.model.to(device)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> RolloutExplainer:
        """Load model and image processor the ``transformers`` way and wrap them.

        Args:
            pretrained_model_name_or_path: a Hub id (``"facebook/deit-tiny-patch16-224"``), a local
                checkpoint directory, ``"demo"`` for the ViT shipped with this package,
                ``"demo-swin"`` for the shipped Swin, or an already loaded ``transformers`` model
                (its processor is then ``image_processor=`` or loaded from ``model.name_or_path``).
            **kwargs: the explainer's settings (``method``, ``head_fusion``, ``discard_ratio``,
                ``device``, ``interpolate_pos_encoding``, ``batch_size``, ``rollout_buffer_mib``,
                ``image_processor``, ``tokenizer``); everything else goes to ``transformers``'
                ``from_pretrained`` (``revision``, ``token``, ``cache_dir``, ``local_files_only``,
                ``dtype``, ...).

        Raises:
            UnsupportedModelError: an architecture without global self-attention (checked from its
                config, before the weights are loaded).
            OSError: the checkpoint cannot be found (``transformers``' message, with a hint).
            TypeError: neither a name, a path nor a loaded model; or loading options given with a
                loaded model.
            ValueError: a loaded model whose processor cannot be found (pass ``image_processor=``).
        """
        own = set(inspect.signature(cls.__init__).parameters) - {"self", "model"}
        settings = {k: kwargs.pop(k) for k in list(kwargs) if k in own}
        ExplainRequest(**{k: v for k, v in settings.items() if k in ("method", "head_fusion", "discard_ratio")})
        check_count(settings.get("batch_size", 1), "batch_size")
        check_megabytes(settings.get("rollout_buffer_mib", 0), "rollout_buffer_mib")
        check_device(settings.get("device"))
        source = pretrained_model_name_or_path
        if isinstance(source, torch.nn.Module):
            model = source
            _checked_config(model)
            loading = sorted(k for k in kwargs if k not in HUB_KWARGS)
            if loading:
                raise TypeError(
                    f"{', '.join(loading)} only appl{'ies' if len(loading) == 1 else 'y'} when loading a checkpoint; "
                    f"this {type(model).__name__} is already loaded (change it directly, e.g. model.to(dtype))"
                )
        elif isinstance(source, (str, os.PathLike)):
            model = load_model(source, **kwargs)
        else:
            raise TypeError(
                "pretrained_model_name_or_path must be a Hub id, a checkpoint folder, 'demo' or a loaded transformers "
                f"model; got {type(source).__name__}"
            )
        loaded = model is source
        if "image_processor" not in settings or ("tokenizer" not in settings and not loaded):
            processor, tokenizer = _processors_of(model, kwargs) if loaded else load_processors(source, **kwargs)
            settings.setdefault("image_processor", processor)
            settings.setdefault("tokenizer", tokenizer)
        return cls(model, **settings)

    # ------------------------------------------------------------------ defaults, labels, targets
    method = property(lambda self: self.defaults.method, doc="The default method.")
    head_fusion = property(lambda self: self.defaults.head_fusion, doc="The default head fusion.")
    discard_ratio = property(lambda self: self.defaults.discard_ratio, doc="The default discard ratio (None: per method).")

    @property
    def is_image_text_model(self) -> bool:
        """Whether the model scores images against texts (CLIP, SigLIP): ``text=`` targets work."""
        return self.vision_root is not self.model

    @property
    def num_layers(self) -> int:
        """Number of self-attention layers of the vision tower."""
        return len(self.attention_modules)

    @property
    def num_heads(self) -> int:
        """Attention heads per layer, from the config."""
        heads = getattr(_vision_config(self.model.config), "num_attention_heads", None) or 0
        return int(heads[-1] if isinstance(heads, (list, tuple)) else heads)  # per stage for Swin: the last

    @property
    def _has_classifier(self) -> bool:
        if getattr(self.family, "is_segmenter", lambda model: False)(self.model):  # a class per pixel
            return True
        return any(hasattr(self.model, name) for name in ("classifier", "cls_classifier", "class_labels_classifier"))

    @property
    def is_detector(self) -> bool:
        """Whether the model predicts boxes from detection tokens (YOLOS): ``detection=`` and
        ``min_score=`` name what to explain."""
        return bool(getattr(self.family, "detector", False)) and self.family.is_detector_model(self.model)

    @property
    def num_labels(self) -> int:
        """Number of classes (0 for backbones without a classifier)."""
        return int(getattr(self.model.config, "num_labels", 0)) if self._has_classifier else 0

    @property
    def id2label(self) -> dict[int, str]:
        """Class index → name, from the model config (empty for backbones without a classifier)."""
        if not self._has_classifier:
            return {}
        return {int(k): str(v) for k, v in (getattr(self.model.config, "id2label", None) or {}).items()}

    def resolve_target(self, target: int | str) -> int:
        """A class index or label name → class index.

        Label names match case-insensitively, also against each comma-separated synonym of an
        ImageNet-style label (``"tabby"`` finds ``"tabby, tabby cat"``).

        Raises:
            TargetError: no classifier, an out-of-range index, or an unknown name (closest suggested).
        """
        if self.num_labels == 0:
            raise TargetError(
                f"{type(self.model).__name__} has no classifier head, so there is no class {target!r} to explain; "
                "load a *ForImageClassification checkpoint or pass target=callable(outputs) -> (B,) scores"
            )
        return label_index(self.id2label, self.num_labels, target)

    def request(self, *, queries_later: bool = False, **settings) -> ExplainRequest:
        """This explainer's defaults overridden by ``settings``, validated against the model.

        ``queries_later=True`` lets an open-vocabulary detector's ``text=`` queries be missing (the
        pipeline's defaults, whose calls each give their own queries)."""
        request = self.defaults.updated(**settings)
        name = type(self.model).__name__
        if getattr(self.family, "has_regions", lambda model: False)(self.model):  # a dense prediction: region targets
            segmenter = self.family.is_segmenter(self.model)
            given = [k for k in ("target", "text", "top_k", "detection", "min_score") if getattr(request, k) is not None]
            if segmenter and given and given != ["target"]:
                raise TargetError(
                    f"{name} predicts a class per pixel: explain a region of it with region=(x0, y0, x1, y1) or "
                    f"region=mask and the class with target=, not {given[0]}="
                )
            if not segmenter and given and not (given == ["target"] and request._only_predicted()):
                raise TargetError(
                    f"{name} predicts a dense map (depth), not classes: explain a region of it with "
                    f"region=(x0, y0, x1, y1) in image pixels or region=mask (default: the whole image), not {given[0]}="
                )
            request.check_model(self.num_layers, self.num_heads)
            if segmenter:
                if request.callable_target is not None:
                    raise TargetError(
                        f"{name} explains a class over a region: give target= a class index or label name, not a callable"
                    )
                for target in request.target if request.targets_per_image else (request.target,):
                    if target is not None:
                        self.resolve_target(target)
            return request
        if request.region is not None or request.region_reduce is not None:
            given = "region=" if request.region is not None else "region_reduce="
            raise TargetError(f"{given} names a region of a dense prediction (DPT depth); {name} predicts none")
        if self.is_detector:
            asked = ("target", "top_k") if self.family.needs_text else ("target", "text", "top_k")
            given = [k for k in asked if getattr(request, k) is not None]
            if given and not (given == ["target"] and request._only_predicted()):
                raise TargetError(
                    f"{name} is a detector: name the detection to explain with detection=index (0 to "
                    f"{self.family.detection_count(self) - 1}) or explain every detection above a score with "
                    f"min_score=, not {given[0]}="
                )
            if self.family.needs_text and (request.text is None and not queries_later or self.tokenizer is None):
                raise TargetError(
                    f"{name} detects what text queries name: pass text=['a photo of a cat', ...] (one query or a list), "
                    "with the checkpoint's tokenizer loaded"
                )
            self.family.check_target(self, request.detection)
            check_request = getattr(self.family, "check_request", None)  # methods and settings the family refuses
            if check_request is not None:
                check_request(self, request)
            request.check_model(self.num_layers, self.num_heads)
            return request
        if isinstance(request.text, tuple):
            raise TargetError(f"text= takes one description for {name}; a list of queries is for open-vocabulary detectors (OWL-ViT)")
        if request.detection is not None or request.min_score is not None:
            raise TargetError(
                f"detection= and min_score= name detections of a detection model (YOLOS); {name} predicts no boxes"
            )
        if request.text is not None and (not self.is_image_text_model or self.tokenizer is None):
            raise TargetError(
                f"text= needs an image-text model such as CLIP loaded with its tokenizer; {type(self.model).__name__} "
                "has no text tower (use target= with a class instead)"
            )
        if request.top_k is not None and self.num_labels == 0:
            raise TargetError(f"top_k needs a classifier; {type(self.model).__name__} has none")
        request.check_model(self.num_layers, self.num_heads)
        targets = request.target if request.targets_per_image else (request.target,)
        for target in targets:
            if target is not None and not callable(target):
                self.resolve_target(target)
        return request

    # ------------------------------------------------------------------ the model, for the stages
    def layout(self, input_size: tuple[int, int], inputs: dict | None = None) -> TokenLayout | WindowedLayout:
        """Token layout for a ``(height, width)`` model input (windowed models: from the windows
        their blocks hold between calls, which an earlier call outside the explainer may have clamped;
        SigLIP 2: from ``inputs``, the batch's spatial shapes)."""
        held = held_windows(self.window_blocks) if self.window_blocks else None
        return layout_from_config(self.model.config, input_size, held, inputs)

    def windows_for(self, input_size: tuple[int, int]):
        """Context for forward passes of ``(height, width)`` inputs: a windowed model's blocks run
        with this size's window geometry, shared only with calls that clamp them alike and restored
        afterwards (:func:`~hf_vit_rollout.window_capture.kept_window_geometry`); a no-op otherwise."""
        if not self.window_blocks:
            return kept_window_geometry([])
        return kept_window_geometry(self.window_blocks, self.layout(input_size).geometry())

    def on_model(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``pixel_values`` on the model's device, in its parameters' dtype."""
        param = next(self.model.parameters())
        return pixel_values.to(device=param.device, dtype=param.dtype)

    def run_model(self, pixel_values: torch.Tensor, text_inputs: dict | None = None, inputs: dict | None = None):
        """The forward pass: the whole image-text model with ``text_inputs``, else the vision tower.
        ``inputs``: batched model inputs besides ``pixel_values`` (SigLIP 2's mask and spatial shapes)."""
        kwargs = dict(self.forward_kwargs)  # what windowed blocks need to return their attention
        kwargs.update({k: v.to(pixel_values.device) for k, v in (inputs or {}).items()})
        if self.family is not None:  # what this input's forward pass needs (ViT-MAE: the identity shuffle)
            kwargs.update(self.family.call_kwargs(self.vision_root, pixel_values))
        if self.interpolate_pos_encoding and "interpolate_pos_encoding" in inspect.signature(self.model.forward).parameters:
            kwargs["interpolate_pos_encoding"] = True
        try:
            if text_inputs:
                inputs = {k: v.to(pixel_values.device) for k, v in text_inputs.items()}
                tile = getattr(self.family, "tile_text", None)  # OWL-ViT: the queries for every image
                if tile is not None:
                    inputs = tile(inputs, pixel_values.shape[0])
                return self.model(pixel_values=pixel_values, **inputs, **kwargs)
            return self.vision_root(pixel_values=pixel_values, **kwargs)
        except ValueError as exc:
            if "size" in str(exc) and not self.interpolate_pos_encoding:
                raise ValueError(
                    f"{exc}. The processor produced {tuple(pixel_values.shape[-2:])} inputs; create the "
                    "explainer with interpolate_pos_encoding=True to explain other input sizes"
                ) from exc
            raise

    def logits_of(self, outputs, required: bool = True) -> torch.Tensor | None:
        """The classifier logits of ``outputs``; without a classifier ``None``, or an error if ``required``."""
        logits = getattr(outputs, "logits", None)
        if logits is None and required:
            raise TargetError(
                f"{type(self.model).__name__} has no classifier logits; pass target=callable(outputs) -> (B,) scores"
            )
        return logits

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, num_labels)`` logits → probabilities: sigmoid for multi-label models, else softmax."""
        if getattr(self.model.config, "problem_type", None) == "multi_label_classification":
            return logits.sigmoid()
        return logits.softmax(-1)

    def text_inputs(self, text: str) -> dict:
        """Tokenised ``text``; longer than the text tower takes, it is truncated with a warning."""
        limit = getattr(getattr(self.model.config, "text_config", None), "max_position_embeddings", None)
        limit = min(limit or 10**9, getattr(self.tokenizer, "model_max_length", None) or 10**9)
        texts = [text] if isinstance(text, str) else list(text)  # a list: an open-vocabulary detector's queries
        length = max(len(self.tokenizer(t)["input_ids"]) for t in texts)
        if length > limit:
            warnings.warn(f"text= has {length} tokens; the model takes {limit}, so it was truncated", ExplanationWarning, stacklevel=3)
        return dict(self.tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt"))

    # ------------------------------------------------------------------ entry points
    def __call__(self, images, target=None, **settings) -> Explanation | list:
        """Explain one image or a batch.

        Args:
            images: a path, URL, ``PIL.Image``, numpy ``(H, W[, C])`` array, torch ``(C, H, W)``
                tensor, a ``(B, C, H, W)`` tensor, or a list of these.
            target: for class-specific methods, the class to explain: an index, a label name, a
                list with one per image (``None`` in it: that image's predicted class), or a
                callable ``score(outputs) -> (B,)`` tensor. ``None`` explains the predicted class.
            **settings: ``method``, ``head_fusion``, ``discard_ratio``; ``layer`` and ``head``
                (method ``"attention"``); ``start_layer`` (product methods); ``text`` (image-text models:
                explain the similarity with this text); ``top_k`` (explain each of the k most
                probable classes, from one forward pass); ``progress``; ``full_resolution``
                (heat-maps at the image's own size instead of at most
                :data:`~hf_vit_rollout.placement.HEATMAP_MAX_PIXELS`).

        Returns:
            One :class:`Explanation` for a single image, else a list in input order (with
            ``top_k``, a list of ``k`` explanations per image).
        """
        sources, single = self._sources(images)
        results = list(self.explain_iter(sources, self.request(target=target, **settings)))
        return results[0] if single else results

    def explain_iter(self, sources: list, request: ExplainRequest) -> Iterator:
        """Explanations of ``sources`` one by one, decoding a batch at a time (memory stays flat)."""
        if request.targets_per_image and len(request.target) != len(sources):
            raise TargetError(f"got {len(request.target)} targets for {len(sources)} images; pass one target, or one per image")
        if isinstance(request.detection, tuple) and len(request.detection) != len(sources):
            raise TargetError(
                f"got {len(request.detection)} detections for {len(sources)} images; pass one detection, or one per image"
            )
        text_inputs = None if request.text is None else self.text_inputs(request.text)
        bar = None
        if request.progress and len(sources) > 1:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(sources), desc="explaining", unit="image")
        for start in range(0, len(sources), self.batch_size):
            chunk = sources[start : start + self.batch_size]
            batch = [
                stages.preprocess(self, source, self._target_of(request, start + i), f"images[{start + i}]")
                for i, source in enumerate(chunk)
            ]
            for i, (prepared, passed) in enumerate(zip(batch, stages.forward(self, batch, request, text_inputs))):
                yield stages.postprocess(self, prepared, passed, request, start + i)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()

    def _sources(self, images) -> tuple[list, bool]:
        """A call's inputs → ``(list of sources, single)``: images, or clips for a video model."""
        sources = getattr(self.family, "sources", None)
        return sources(images) if sources else image_sources(images)

    @staticmethod
    def _target_of(request: ExplainRequest, index: int):
        if isinstance(request.detection, tuple):  # a detector's per-image detections
            return request.detection[index]
        if request.targets_per_image:
            return request.target[index]
        return None if request.callable_target is not None else request.target

    def predict(self, images) -> torch.Tensor:
        """``(B, num_labels)`` class probabilities, without explaining (sigmoid or softmax, see
        :meth:`probabilities`). Safe to call while other threads explain with the same model.

        Raises:
            TargetError: the model has no classifier head.
            NonFiniteError: the model's logits are NaN or infinite.
        """
        if not self.num_labels:
            raise TargetError(f"{type(self.model).__name__} has no classifier head, so it predicts no classes")
        if self.is_detector:
            raise TargetError(
                f"{type(self.model).__name__} predicts boxes, not one class per image; explain with min_score= (every "
                "detection above a score, with its label and score) or detection= (one detection token)"
            )
        refuse_inside_target("predict()")
        sources, _ = self._sources(images)
        prepared = [stages.preprocess(self, s, where=f"images[{i}]") for i, s in enumerate(sources)]
        sizes: dict[tuple, list[int]] = {}
        for i, p in enumerate(prepared):
            sizes.setdefault(tuple(p.pixel_values.shape), []).append(i)
        rows: list = [None] * len(prepared)
        for members in sizes.values():  # one forward pass per input size
            group = [prepared[i] for i in members]
            pixel_values = torch.stack([p.pixel_values for p in group])
            with self.windows_for(tuple(pixel_values.shape[-2:])), torch.no_grad():
                logits = self.logits_of(self.run_model(self.on_model(pixel_values), inputs=stages.batch_inputs(group))).float()
            stages.check_finite(logits, "model outputs", members)
            for i, row in zip(members, logits):
                rows[i] = row
        return self.probabilities(torch.stack(rows))

    def relevance_maps(self, pixel_values: torch.Tensor, target=None, **settings) -> torch.Tensor:
        """Patch relevance for already-preprocessed inputs (no image loading, no upsampling).

        Args:
            pixel_values: ``(B, C, H, W)`` model inputs, as the image processor makes them.
            target, settings: as for :meth:`__call__`.

        Returns:
            ``(B, grid_h, grid_w)`` float32 raw relevance (not rescaled).
        """
        shape = getattr(self.family, "input_shape", "(B, C, H, W)")  # video: (B, T, C, H, W)
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != shape.count(",") + 1:
            raise ValueError(f"pixel_values must be a {shape} tensor; use the explainer's __call__ for images or videos")
        request = self.request(target=target, **settings)
        if request.top_k is not None:
            raise ValueError("relevance_maps gives one map per input; for top_k call it once per class (target=index)")
        count = pixel_values.shape[0]
        if request.targets_per_image and len(request.target) != count:
            raise TargetError(f"got {len(request.target)} targets for {count} images; pass one target, or one per image")
        if request.min_score is not None:
            raise ValueError(
                "relevance_maps gives one map per input; min_score= can give several detections per image: call the "
                "explainer itself, or pass detection= (one index, or one per image)"
            )
        if isinstance(request.detection, tuple) and len(request.detection) != count:
            raise TargetError(f"got {len(request.detection)} detections for {count} images; pass one detection, or one per image")
        layout = self.layout(tuple(pixel_values.shape[-2:]))
        batch = [stages.PreparedImage(None, x, None, self._target_of(request, i)) for i, x in enumerate(pixel_values)]
        text_inputs = None if request.text is None else self.text_inputs(request.text)
        passes = stages.forward(self, batch, request, text_inputs)
        return layout.patch_relevance(torch.stack([p.relevance[0] for p in passes]))

