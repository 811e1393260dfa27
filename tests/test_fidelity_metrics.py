"""benchmarks/fidelity.py's metric functions on inputs with known answers (not the benchmark)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_SPEC = importlib.util.spec_from_file_location("fidelity", Path(__file__).resolve().parents[1] / "benchmarks" / "fidelity.py")
fidelity = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(fidelity)


def test_kl_is_zero_for_equal_rows_and_matches_the_closed_form():
    p = np.array([[0.5, 0.5], [0.9, 0.1]])
    assert fidelity.mean_kl(p, p) == pytest.approx(0.0, abs=1e-12)
    q = np.array([[0.25, 0.75], [0.9, 0.1]])
    want = (0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75) + 0.0) / 2  # row 2 contributes 0
    assert fidelity.mean_kl(p, q) == pytest.approx(want, rel=1e-12)
    assert fidelity.mean_kl(q, p) != pytest.approx(fidelity.mean_kl(p, q))  # not symmetric: the order matters


def test_softmax_of_logits_is_shift_invariant_and_sums_to_one():
    z = np.array([[1.0, 2.0, 3.0]])
    assert np.allclose(fidelity.softmax(z), fidelity.softmax(z + 100.0))
    assert fidelity.softmax(z).sum() == pytest.approx(1.0)
    assert fidelity.softmax(np.array([[0.0, np.log(3.0)]])) == pytest.approx(np.array([[0.25, 0.75]]))


def test_top1_agreement_counts_same_argmax():
    ref = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    got = np.array([[0.8, 0.2], [0.7, 0.3], [0.4, 0.6], [0.1, 0.9]])
    assert fidelity.top1_agreement(ref, got) == 0.5


def test_confident_agreement_uses_only_confident_reference_rows():
    p_ref = np.array([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.5, 0.3, 0.2], [0.2, 0.7, 0.1]])
    got = np.array([[0.1, 0.8, 0.1], [0.9, 0.05, 0.05], [0.6, 0.2, 0.2], [0.1, 0.8, 0.1]])
    # confident rows: 0 (disagrees), 2 (p = 0.5, agrees), 3 (agrees); row 1 (p 0.4) is left out though it agrees
    assert fidelity.confident_agreement(p_ref, got) == (pytest.approx(2 / 3), 3)
    assert fidelity.confident_agreement(p_ref, got, threshold=0.95) == (None, 0)


def test_cosine_and_classifier_scores():
    ref = np.array([[1.0, 0.0], [1.0, 1.0]])
    got = np.array([[0.0, 2.0], [3.0, 3.0]])
    assert fidelity.cosines(ref, got) == pytest.approx([0.0, 1.0])
    assert fidelity.embedding_scores(ref, got) == {"mean_cosine": pytest.approx(0.5), "min_cosine": pytest.approx(0.0)}
    logits = np.array([[4.0, 0.0], [0.0, 0.1]])
    s = fidelity.classifier_scores(logits, logits[:, ::-1], probabilities=False)
    assert s["top1_agreement"] == 0.0 and s["confident_agreement"] == 0.0 and s["confident_n"] == 2
    assert s["mean_kl"] > 0.5
