"""Cache fingerprints for explained data sets, without pickling the model.

``datasets`` names a ``map``'s cache file after a fingerprint of the data set and the function;
left to itself it hashes the function by pickling it, which for an explainer means pickling the
whole model on every call. Here the model enters the fingerprint as a digest of its weights
(``xxh3_128`` of every tensor of its ``state_dict``, with names, dtypes and shapes), computed once per
model and computed again only after a weight changes in place (torch's version counters tell). A
weight replaced through ``.data`` bypasses those counters: pass ``load_from_cache_file=False`` (or
``new_fingerprint=``) after such a change.
"""

from __future__ import annotations

import json
import weakref

import torch
import xxhash

from .. import __version__

_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tensors(model: torch.nn.Module):
    return list(model.state_dict(keep_vars=True).items())


def _version_key(tensors) -> tuple:
    """Cheap identity of the weights as they are now: which tensors, where, and their in-place edit counts."""
    return tuple((name, t._version, t.data_ptr(), t.dtype, t.device, tuple(t.shape)) for name, t in tensors)


def weights_digest(model: torch.nn.Module) -> str:
    """Hex digest of the model's weights and buffers (computed once; again only after an in-place change)."""
    tensors = _tensors(model)
    key = _version_key(tensors)
    cached = _DIGESTS.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    digest = xxhash.xxh3_128()
    with torch.no_grad():
        for name, tensor in tensors:
            flat = tensor.detach().reshape(-1)
            digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
            if flat.numel():
                digest.update(flat.contiguous().cpu().view(torch.uint8).numpy().data)
    value = digest.hexdigest()
    _DIGESTS[model] = (key, value)
    return value


def _jsonable(value):
    if callable(value):
        from datasets.fingerprint import Hasher

        return "callable:" + Hasher.hash(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items())}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def explainer_state(explainer) -> dict:
    """What of an explainer decides its results: the weights, the processor and its own settings."""
    processor = explainer.image_processor
    processor_json = processor.to_json_string() if hasattr(processor, "to_json_string") else repr(processor)
    params = next(explainer.model.parameters(), None)
    return {
        "weights": weights_digest(explainer.model),
        "model": type(explainer.model).__name__,
        "processor": processor_json,
        "interpolate_pos_encoding": explainer.interpolate_pos_encoding,
        "rollout_buffer_mib": explainer.rollout_buffer_mib,
        "device": None if params is None else params.device.type,
        "tokenizer": None if explainer.tokenizer is None else type(explainer.tokenizer).__name__,
    }


def job_fingerprint(*parts) -> str:
    """A ``datasets``-valid fingerprint (32 hex digits) of JSON-able ``parts``, with this package's version."""
    text = json.dumps([__version__, *[_jsonable(p) for p in parts]], sort_keys=True, default=repr)
    return xxhash.xxh3_128(text.encode()).hexdigest()
