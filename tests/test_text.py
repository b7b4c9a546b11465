"""The frozen text encoder (lesson 06): offline loading, shapes and masks, the real
weights' semantics, truncation, the caption-embedding cache and its lookups."""

import os
import socket
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from course_lib import text
from course_lib.data import CAPTIONS
from course_lib.settings import get_settings
from course_lib.text import TextEmbedding, caption_embeddings, caption_file, lookup, pooled


@pytest.fixture(scope="module")
def encoder():
    """The bundled encoder, loaded once for the module with the hub switched off and every
    socket connection refused, counting the attempts."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access is disabled in this test")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.delenv("COURSE_TEXT_ENCODER", raising=False)
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        text.clear_encoders()
        enc = text.load_text_encoder(device="cpu")
    enc.network_attempts = attempts
    return enc


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("COURSE_TEXT_ENCODER", raising=False)
    return tmp_path


# --------------------------------------------------------------------------- the encoder
def test_bundled_encoder_loads_offline_frozen(encoder):
    assert encoder.network_attempts == []
    assert encoder.name == text.BUNDLED and encoder.dim == 384 == text.encoder_width()
    assert encoder.limit == 256  # sentence-transformers' max_seq_length, below BERT's 512 positions
    assert not encoder.model.training
    assert not any(p.requires_grad for p in encoder.model.parameters())
    assert text.load_text_encoder(device="cpu") is encoder  # once per process


def test_shapes_and_mask(encoder):
    prompts = ["a sneaker", "", "a pair of ankle boots"]
    emb = encoder.encode(prompts)
    n_tokens = [len(encoder.token_strings(p)) for p in prompts]
    assert encoder.token_strings("") == ["[CLS]", "[SEP]"]  # the null condition is two real tokens
    assert emb.tokens.shape == (3, max(n_tokens), 384) and emb.tokens.dtype == torch.float32
    assert emb.mask.dtype == torch.bool and emb.mask.shape == (3, max(n_tokens))
    assert emb.mask.sum(1).tolist() == n_tokens
    for row, n in zip(emb.mask, n_tokens):  # right padding: real tokens first
        assert row[:n].all() and not row[n:].any()
    assert (emb.tokens[~emb.mask] == 0).all()  # padded slots hold zeros
    fixed = encoder.encode(prompts, max_length=16, padding="max_length")
    assert fixed.tokens.shape == (3, 16, 384) and fixed.mask.sum(1).tolist() == n_tokens
    with pytest.raises(ValueError, match="padding"):
        encoder.encode(prompts, padding="left")


def test_padding_does_not_change_real_tokens(encoder):
    alone = encoder.encode(["a sneaker"])
    padded = encoder.encode(["a sneaker", "a long leather boot with laces and a zip at the side"])
    n = alone.length
    assert padded.length > n
    assert torch.allclose(padded.tokens[0, :n], alone.tokens[0], atol=1e-5)
    assert not padded.mask[0, n:].any()


def test_same_prompt_same_embedding(encoder):
    a = encoder.encode(["a summer dress", "a summer dress"])
    b = encoder(["a summer dress", "a summer dress"])
    # equal up to float rounding: with several threads, BLAS may sum two rows of one batch in different orders
    torch.testing.assert_close(a.tokens[0], a.tokens[1], rtol=0, atol=1e-5)
    torch.testing.assert_close(a.tokens, b.tokens, rtol=0, atol=1e-5)
    other = pooled(encoder.encode(["a leather handbag"]))[0]
    assert (pooled(a)[0] - other).abs().max() > 0.1  # a different prompt does differ: the check is not vacuous
    assert torch.equal(a.mask, b.mask)


def test_real_weights_know_what_words_mean(encoder):
    p = pooled(encoder.encode(["a sneaker", "a running shoe", "a handbag"]))
    close = F.cosine_similarity(p[0], p[1], dim=0)
    far = F.cosine_similarity(p[0], p[2], dim=0)
    assert close > far, (close, far)


def test_pooled_is_the_masked_mean(encoder):
    emb = encoder.encode(["a coat", "", "an overcoat for the winter"])
    got = pooled(emb)
    for i in range(3):
        assert torch.allclose(got[i], emb.tokens[i, emb.mask[i]].mean(0), atol=1e-6)
    with pytest.raises(ValueError, match="TextEmbedding"):
        pooled(emb.tokens)


def test_too_long_prompt_warns_and_is_truncated(encoder):
    long = "a very long description of a shoe " * 40
    with pytest.warns(UserWarning, match=r"'a very long.*truncated to the text encoder's limit of 256 tokens"):
        emb = encoder.encode([long, "a bag"])
    assert emb.length == 256 and emb.mask[0].all()
    with pytest.warns(UserWarning, match=r"truncated to max_length=4 tokens"):
        emb = encoder.encode(["a pair of ankle boots"], max_length=4)
    assert emb.length == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a prompt that just fits is not cut
        fits = encoder.encode(["a sneaker"], max_length=len(encoder.token_strings("a sneaker")))
    assert fits.mask.all()


@pytest.mark.parametrize(
    "bad, match",
    [
        ([], "prompts must be a non-empty list of strings"),
        ("a sneaker", "non-empty list of strings; got one string"),
        (["a sneaker", 3], "item 1 is a int"),
        ([None], "item 0 is a NoneType"),
        (None, "non-empty list of strings"),
    ],
)
def test_bad_prompts_say_what_was_expected(encoder, bad, match):
    with pytest.raises(ValueError, match=match):
        encoder.encode(bad)


def test_bad_max_length(encoder):
    for bad in (0, 1, 257, 16.0, True):
        with pytest.raises(ValueError, match="max_length must be an int from 2 to the encoder's limit 256"):
            encoder.encode(["a bag"], max_length=bad)


def test_text_embedding_checks_and_helpers():
    emb = TextEmbedding(torch.randn(2, 3, 4), torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool))
    assert len(emb) == 2 and (emb.length, emb.dim) == (3, 4)
    assert emb[1].tokens.shape == (1, 3, 4) and emb[-1].mask.tolist() == [[True, False, False]]
    wide = emb.pad_to(5)
    assert wide.tokens.shape == (2, 5, 4) and not wide.mask[:, 3:].any() and (wide.tokens[:, 3:] == 0).all()
    both = TextEmbedding.cat([emb, wide[:1]])
    assert both.tokens.shape == (3, 5, 4)
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        TextEmbedding(torch.randn(2, 3, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match="mask must be N×L = \\(2, 3\\)"):
        TextEmbedding(torch.randn(2, 3, 4), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="tokens must be a tensor N×L×D"):
        TextEmbedding(torch.randn(2, 3), torch.ones(2, 3, dtype=torch.bool))


def test_text_embedding_index_out_of_range_is_an_index_error():
    """emb[5] on 2 prompts used to return an empty embedding (a slice past the end)."""
    emb = TextEmbedding(torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool))
    for bad in (2, 5, -3):
        with pytest.raises(IndexError, match=rf"prompt index {bad} is out of range for 2 prompt\(s\)"):
            emb[bad]
    assert torch.equal(emb[-2].tokens, emb.tokens[:1]) and torch.equal(emb[-1].tokens, emb.tokens[1:])
    assert [len(e) for e in emb] == [1, 1]  # iteration stops at the end (it never did)


# --------------------------------------------------------------------------- the caption cache
def _count_encodes(monkeypatch, encoder):
    calls = []
    real = text.TextEncoder.encode

    def counting(self, prompts, *args, **kwargs):
        calls.append(list(prompts))
        return real(self, prompts, *args, **kwargs)

    monkeypatch.setattr(text.TextEncoder, "encode", counting)
    return calls


def test_caption_embeddings_are_computed_once_and_reused(encoder, cache, monkeypatch):
    calls = _count_encodes(monkeypatch, encoder)
    captions = ["a sneaker", "a bag", "a sneaker", ""]
    table = caption_embeddings(captions, max_length=16, device="cpu")
    assert calls == [["a sneaker", "a bag", ""]]  # each distinct caption encoded once
    assert table.tokens.shape == (4, 5, 384) and torch.equal(table.tokens[0], table.tokens[2])
    assert torch.allclose(table.tokens[:2], encoder.encode(["a sneaker", "a bag"]).tokens, atol=1e-5)
    path = caption_file(captions, 16)
    assert path.exists() and path.parent == cache / "text" and path.name.startswith(text.BUNDLED + "-")

    def no_loading(*args, **kwargs):
        raise AssertionError("a cached table must not load the encoder")

    monkeypatch.setattr(text, "load_text_encoder", no_loading)
    calls.clear()
    again = caption_embeddings(captions, max_length=16, device="cpu")
    assert calls == [] and torch.equal(again.tokens, table.tokens) and torch.equal(again.mask, table.mask)
    # other captions, order or length → another file
    assert caption_file(captions[::-1], 16) != path and caption_file(captions, 8) != path


def test_caption_cache_is_written_atomically(encoder, cache, monkeypatch):
    renames = []
    real_replace = os.replace

    def recording(src, dst):
        renames.append((Path(src), Path(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(text.os, "replace", recording)
    caption_embeddings(["a coat"], device="cpu")
    path = caption_file(["a coat"])
    [(src, dst)] = renames
    assert dst == path and src.parent == path.parent and src.name.startswith(".") and not src.exists()

    # a write that dies half way leaves neither a table nor a temporary file behind
    import safetensors.torch

    def dies(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", dies)
    with pytest.raises(KeyboardInterrupt):
        caption_embeddings(["a jacket"], device="cpu")
    assert not caption_file(["a jacket"]).exists()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_a_damaged_cache_file_is_recomputed(encoder, cache):
    path = caption_file(["a frock"])
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a safetensors file")
    table = caption_embeddings(["a frock"], device="cpu")
    assert table.tokens.shape[0] == 1 and path.stat().st_size > 1000


def test_lookup_gathers_rows(encoder, cache):
    table = caption_embeddings(["", "a sneaker", "a bag"], device="cpu")
    ids = torch.tensor([2, 0, 2, 1])
    got = lookup(table, ids)
    assert got.tokens.shape == (4, table.length, 384)
    assert torch.equal(got.tokens, table.tokens[ids]) and torch.equal(got.mask, table.mask[ids])
    assert torch.equal(lookup(table, [1]).tokens, table.tokens[1:2])
    for bad in ([3], [-1], torch.tensor([[0]]), torch.tensor([0.5])):
        with pytest.raises(ValueError, match="ids must"):
            lookup(table, bad)
    with pytest.raises(ValueError, match="table must be a TextEmbedding"):
        lookup(table.tokens, ids)
    assert torch.equal(lookup(table, ids, check=False).tokens, got.tokens)


def test_dataset_captions_and_caption_ids():
    captions = text.dataset_captions("fashion_mnist")
    assert captions[text.NULL_ID] == "" and len(captions) == 1 + sum(len(c) for c in CAPTIONS["fashion_mnist"])
    labels = torch.arange(10).repeat(50)
    ids = text.caption_ids(labels, "fashion_mnist", torch.Generator().manual_seed(0))
    assert ids.shape == labels.shape and ids.dtype == torch.int64
    for label, i in zip(labels.tolist(), ids.tolist()):
        assert captions[i] in CAPTIONS["fashion_mnist"][label]
    assert len(set(ids.tolist())) == len(captions) - 1  # every phrasing drawn, never the null one
    again = text.caption_ids(labels, "fashion_mnist", torch.Generator().manual_seed(0))
    assert torch.equal(ids, again)
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        text.caption_ids(torch.tensor([10]), "fashion_mnist")
    # check=False (training's sync-free path) draws the same ids
    fast = text.caption_ids(labels, "fashion_mnist", torch.Generator().manual_seed(0), check=False)
    assert torch.equal(fast, ids)
    with pytest.raises(ValueError, match="labels must be a 1-dim integer tensor"):
        text.caption_ids(torch.tensor([0.0]), "fashion_mnist")


# --------------------------------------------------------------------------- other encoders
def test_course_text_encoder_names_another_model(encoder, cache, monkeypatch, tmp_path):
    """A CLIP-style folder: only its text tower runs, and its own limits apply."""
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(vocab_size=30522, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32, bos_token_id=101, eos_token_id=102,
                         pad_token_id=0),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16),
        projection_dim=8,
    )
    folder = tmp_path / "tiny-clip"
    CLIPModel(config).save_pretrained(folder)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (folder / f).write_bytes((text.bundled_path() / f).read_bytes())

    monkeypatch.setenv("COURSE_TEXT_ENCODER", str(folder))
    assert get_settings().text_encoder == str(folder)
    # the recipes size the U-Net's context for the named encoder, read from its config before any weights load
    from course_lib.pipeline import pipeline_recipe
    from course_lib.train import conditional_recipe

    assert text.encoder_width() == 16 and text.encoder_width(text.BUNDLED) == 384
    assert conditional_recipe("text")[0].context_dim == 16 and pipeline_recipe()[0].context_dim == 16
    clip = text.load_text_encoder(device="cpu")
    assert clip is not encoder and (clip.name, clip.dim, clip.limit) == ("tiny-clip", 16, 32)
    assert type(clip.model).__name__.startswith("CLIPText")  # the text tower, not the whole CLIPModel
    emb = clip.encode(["a sneaker", ""])
    assert emb.tokens.shape == (2, 5, 16) and emb.mask.sum(1).tolist() == [5, 2]
    assert caption_file(["a bag"]).name.startswith("tiny-clip-")
    assert caption_file(["a bag"]) != caption_file(["a bag"], name=text.BUNDLED)

    monkeypatch.setenv("COURSE_TEXT_ENCODER", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        text.load_text_encoder(device="cpu")
    monkeypatch.setenv("COURSE_TEXT_ENCODER", "sentence-transformers/all-MiniLM-L6-v2")
    assert text.load_text_encoder(device="cpu") is encoder  # the hub id of the bundled weights


def test_prompt_table_gives_what_the_encoder_gave_and_round_trips(tmp_path):
    from course_lib.text import PromptTable, load_text_encoder

    encoder = load_text_encoder(device="cpu")
    prompts = ["", "a sneaker", "a long winter coat with a hood"]
    table = PromptTable.build(prompts + ["a sneaker"], encoder)  # duplicates kept once
    assert table.prompts == prompts
    loaded = PromptTable.load(table.save(tmp_path / "prompts.safetensors"))
    got = loaded.encode(["a sneaker", ""])
    want = encoder.encode(["a sneaker", ""])
    L = want.length
    torch.testing.assert_close(got.tokens[:, :L], want.tokens, rtol=1e-5, atol=1e-5)
    assert torch.equal(got.mask[:, :L], want.mask) and not got.mask[:, L:].any()
    with pytest.raises(KeyError, match="not in this table"):
        loaded.encode(["a purse"])
    with pytest.raises(ValueError, match="distinct prompts"):
        PromptTable(["a", "a"], got)
