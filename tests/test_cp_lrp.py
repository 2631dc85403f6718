"""CP-LRP (Ali et al., ICML 2022) as a registered method: AttnLRP's rules with the attention weights held
constant, so ``A·v`` gives all its relevance to ``v`` and the softmax absorbs nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_vit_rollout.lrp import CP_LRP, attnlrp_relevance, relevance_budget


@pytest.fixture(scope="module")
def demo(demo_batch):
    return demo_batch


def test_cp_lrp_conserves_the_logit_on_the_demo_model(demo):
    """Token relevance sums to the explained logit within 1.9% (measured on these four images:
    0.998-1.019); what is missing is what the biases and ε hold (the budget closes)."""
    explainer, pixels, images = demo
    results = explainer(images, method="cp_lrp")
    with torch.no_grad():
        logits = explainer.model(pixel_values=pixels).logits
    for result, row in zip(results, logits):
        assert result.target == int(row.argmax())
        assert abs(float(result.token_relevance.sum()) / float(row.max()) - 1) < 0.019
    budget = relevance_budget(explainer.model, pixels, rules=CP_LRP)
    assert "softmax" not in budget.absorbed and torch.all(budget.fractions()["unaccounted"].abs() < 1e-5)
    np.testing.assert_allclose([r.token_relevance.sum() for r in results], budget.tokens.numpy(), rtol=1e-5)


def test_cp_lrp_through_the_explainer_equals_the_direct_call(demo):
    explainer, pixels, images = demo
    direct = attnlrp_relevance(explainer.model, pixels, target=[3, 3, 1, 0], rules=CP_LRP)
    results = explainer(images, method="cp_lrp", target=[3, 3, 1, 0])
    for result, row in zip(results, direct.token_relevance):
        np.testing.assert_allclose(result.token_relevance, row.numpy(), rtol=1e-5, atol=1e-6)
    attnlrp = explainer(images[0], method="attnlrp", target=3).token_relevance
    assert not np.allclose(attnlrp, results[0].token_relevance, rtol=0.1)  # a different rule, a different map
