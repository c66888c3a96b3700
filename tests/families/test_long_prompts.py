"""train.max_token_length (kohya's long prompts in 75-token windows) against a transcription of sd-scripts.

The reference functions below are written in this file from reading sd-scripts (commit 48d368f):
`library/strategy_base.py` TokenizeStrategy._get_input_ids, `library/strategy_sd.py` SdTokenizeStrategy and
SdTextEncodingStrategy.encode_tokens, `library/strategy_sdxl.py` SdxlTokenizeStrategy and
SdxlTextEncodingStrategy._get_hidden_states_sdxl / _pool_workaround. They run on models with kohya's 77-token
window (tiny random CLIPs with 77 positions), so the shapes are sd-scripts' 77 / 152 / 227.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from lorakit import api
from lorakit.config.loader import load_config
from lorakit.config.schema import ModelSection
from lorakit.engine.encode import BatchEncoder
from lorakit.families import ModelParts, get_family
from lorakit.families.tiny import tiny_text_config

TINY = {"sd1": "tiny-sd1", "sd2": "tiny-sd2-v", "sdxl": "tiny-sdxl"}
WINDOW = 77  # CLIP's context in the real models

CAPTIONS = [
    "a cat",
    " ".join(["a"] * 75),  # fills the first window exactly: the second starts with the caption's EOS
    "a long caption, " * 9,  # 117 tokens: two windows, the second partly padded
    " ".join(["b"] * 150),  # fills two windows
    "the longest caption of them all " * 12,  # 312 tokens: cut at 150 / 225
]


# -- sd-scripts, transcribed ------------------------------------------------------------------------------------
def kohya_input_ids(tokenizer, text: str, max_length: int) -> torch.Tensor:
    """strategy_base.TokenizeStrategy._get_input_ids (not weighted): (1, 77) or (n, 77)."""
    input_ids = tokenizer(text, padding="max_length", truncation=True, max_length=max_length,
                          return_tensors="pt").input_ids
    if max_length > tokenizer.model_max_length:
        input_ids = input_ids.squeeze(0)
        iids_list = []
        if tokenizer.pad_token_id == tokenizer.eos_token_id:  # v1
            for i in range(1, max_length - tokenizer.model_max_length + 2, tokenizer.model_max_length - 2):
                ids_chunk = (input_ids[0].unsqueeze(0), input_ids[i : i + tokenizer.model_max_length - 2],
                             input_ids[-1].unsqueeze(0))
                iids_list.append(torch.cat(ids_chunk))
        else:  # v2 or SDXL
            for i in range(1, max_length - tokenizer.model_max_length + 2, tokenizer.model_max_length - 2):
                ids_chunk = torch.cat((input_ids[0].unsqueeze(0), input_ids[i : i + tokenizer.model_max_length - 2],
                                       input_ids[-1].unsqueeze(0)))
                if ids_chunk[-2] != tokenizer.eos_token_id and ids_chunk[-2] != tokenizer.pad_token_id:
                    ids_chunk[-1] = tokenizer.eos_token_id
                if ids_chunk[1] == tokenizer.pad_token_id:
                    ids_chunk[1] = tokenizer.eos_token_id
                iids_list.append(ids_chunk)
        input_ids = torch.stack(iids_list)
    return input_ids


def kohya_tokens(tokenizer, captions: list[str], max_token_length: int | None) -> torch.Tensor:
    """SdTokenizeStrategy / SdxlTokenizeStrategy.tokenize: max_length = max_token_length + 2 (None: 77); (b, n, 77)."""
    max_length = tokenizer.model_max_length if max_token_length is None else max_token_length + 2
    return torch.stack([kohya_input_ids(tokenizer, t, max_length) for t in captions], dim=0)


def kohya_sd_hidden(tokenizer, text_encoder, tokens: torch.Tensor, clip_skip: int | None) -> torch.Tensor:
    """strategy_sd.SdTextEncodingStrategy.encode_tokens."""
    b_size = tokens.size()[0]
    max_token_length = tokens.size()[1] * tokens.size()[2]
    model_max_length = tokenizer.model_max_length
    tokens = tokens.reshape((-1, model_max_length))
    if clip_skip is None:
        encoder_hidden_states = text_encoder(tokens)[0]
    else:
        enc_out = text_encoder(tokens, output_hidden_states=True, return_dict=True)
        encoder_hidden_states = enc_out["hidden_states"][-clip_skip]
        encoder_hidden_states = text_encoder.final_layer_norm(encoder_hidden_states)  # `.text_model.` before tf 5
    encoder_hidden_states = encoder_hidden_states.reshape((b_size, -1, encoder_hidden_states.shape[-1]))
    if max_token_length != model_max_length:
        v1 = tokenizer.pad_token_id == tokenizer.eos_token_id
        if not v1:
            states_list = [encoder_hidden_states[:, 0].unsqueeze(1)]
            for i in range(1, max_token_length, model_max_length):
                chunk = encoder_hidden_states[:, i : i + model_max_length - 2]
                if i > 0:
                    for j in range(len(chunk)):
                        if tokens[j, 1] == tokenizer.eos_token:  # sd-scripts compares with the EOS string
                            chunk[j, 0] = chunk[j, 1]
                states_list.append(chunk)
            states_list.append(encoder_hidden_states[:, -1].unsqueeze(1))
            encoder_hidden_states = torch.cat(states_list, dim=1)
        else:
            states_list = [encoder_hidden_states[:, 0].unsqueeze(1)]
            for i in range(1, max_token_length, model_max_length):
                states_list.append(encoder_hidden_states[:, i : i + model_max_length - 2])
            states_list.append(encoder_hidden_states[:, -1].unsqueeze(1))
            encoder_hidden_states = torch.cat(states_list, dim=1)
    return encoder_hidden_states


def kohya_pool(text_encoder, last_hidden_state, input_ids, eos_token_id) -> torch.Tensor:
    """SdxlTextEncodingStrategy._pool_workaround."""
    eos_token_mask = (input_ids == eos_token_id).int()
    eos_token_index = torch.argmax(eos_token_mask, dim=1)
    pooled_output = last_hidden_state[torch.arange(last_hidden_state.shape[0]), eos_token_index]
    return text_encoder.text_projection(pooled_output.to(text_encoder.text_projection.weight.dtype))


def kohya_sdxl_hidden(tokenizer1, tokenizer2, text_encoder1, text_encoder2, input_ids1, input_ids2):
    """SdxlTextEncodingStrategy._get_hidden_states_sdxl → (hidden_states1, hidden_states2, pool2)."""
    b_size = input_ids1.size()[0]
    max_token_length = None if input_ids1.size()[1] == 1 else input_ids1.size()[1] * input_ids1.size()[2]
    input_ids1 = input_ids1.reshape((-1, tokenizer1.model_max_length))
    input_ids2 = input_ids2.reshape((-1, tokenizer2.model_max_length))
    hidden_states1 = text_encoder1(input_ids1, output_hidden_states=True, return_dict=True)["hidden_states"][11]
    enc_out = text_encoder2(input_ids2, output_hidden_states=True, return_dict=True)
    hidden_states2 = enc_out["hidden_states"][-2]
    pool2 = kohya_pool(text_encoder2, enc_out["last_hidden_state"], input_ids2, tokenizer2.eos_token_id)
    n_size = 1 if max_token_length is None else max_token_length // 75
    hidden_states1 = hidden_states1.reshape((b_size, -1, hidden_states1.shape[-1]))
    hidden_states2 = hidden_states2.reshape((b_size, -1, hidden_states2.shape[-1]))
    if max_token_length is not None:
        states_list = [hidden_states1[:, 0].unsqueeze(1)]
        for i in range(1, max_token_length, tokenizer1.model_max_length):
            states_list.append(hidden_states1[:, i : i + tokenizer1.model_max_length - 2])
        states_list.append(hidden_states1[:, -1].unsqueeze(1))
        hidden_states1 = torch.cat(states_list, dim=1)
        states_list = [hidden_states2[:, 0].unsqueeze(1)]
        for i in range(1, max_token_length, tokenizer2.model_max_length):
            states_list.append(hidden_states2[:, i : i + tokenizer2.model_max_length - 2])
        states_list.append(hidden_states2[:, -1].unsqueeze(1))
        hidden_states2 = torch.cat(states_list, dim=1)
        pool2 = pool2[::n_size]
    return hidden_states1, hidden_states2, pool2


# -- models with kohya's 77-token window ------------------------------------------------------------------------
def window77_parts(family: str) -> ModelParts:
    """The tiny model of `family` with 77-position text encoders and tokenizers (the 1st SDXL encoder has 12
    layers, as sd-scripts' `hidden_states[11]` assumes)."""
    parts = get_family(family).load(ModelSection(pretrained_model_name_or_path=TINY[family]))
    pipe = parts.pipeline
    torch.manual_seed(0)
    for i, (te_attr, tok_attr) in enumerate(zip(parts.family.text_encoder_attrs, parts.family.tokenizer_attrs)):
        cfg = tiny_text_config(layers=12 if family == "sdxl" and i == 0 else 2)
        cfg.max_position_embeddings = WINDOW
        if family == "sd2":
            cfg.hidden_act = "gelu"
        setattr(pipe, te_attr, (CLIPTextModelWithProjection if i == 1 else CLIPTextModel)(cfg).eval())
        getattr(pipe, tok_attr).model_max_length = WINDOW
    return parts


@pytest.fixture(scope="module")
def wide() -> dict[str, ModelParts]:
    return {f: window77_parts(f) for f in TINY}


@pytest.mark.parametrize("family", ["sd1", "sd2"])
@pytest.mark.parametrize("max_token_length,positions", [(None, 77), (75, 77), (150, 152), (225, 227)])
@pytest.mark.parametrize("clip_skip", [None, 2])
@torch.no_grad()
def test_sd_long_prompts_match_sd_scripts(wide, family: str, max_token_length: int | None, positions: int,
                                          clip_skip: int | None) -> None:
    parts = wide[family]
    parts.set_prompt_encoding(clip_skip, max_token_length)
    (tok,), (te,) = parts.tokenizers, parts.text_encoders
    kohya_max = None if max_token_length == 75 else max_token_length  # the GUI's 75 is sd-scripts' None
    tokens = kohya_tokens(tok, CAPTIONS, kohya_max)
    (ids,) = parts.family.tokenize(parts, CAPTIONS)
    assert torch.equal(ids, tokens)
    expected = kohya_sd_hidden(tok, te, tokens, clip_skip)
    got = parts.family.encode_prompts(parts, CAPTIONS)["encoder_hidden_states"]
    assert got.shape == expected.shape == (len(CAPTIONS), positions, 32)
    torch.testing.assert_close(got, expected)


def test_sd2_windows_end_and_start_as_sd_scripts(wide) -> None:
    """SD2's tokenizer pads with "!": a window cut inside the caption ends with EOS, an empty one is BOS EOS pad…"""
    parts = wide["sd2"]
    parts.set_prompt_encoding(None, 225)
    tok = parts.tokenizers[0]
    (ids,) = parts.family.tokenize(parts, ["a long caption, " * 9])  # 117 tokens
    bos, eos, pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    assert ids[0, 0, -1] == eos and ids[0, 0, -2] not in (eos, pad)  # window 1 cut: closed with EOS
    assert ids[0, 1, 43] == eos and ids[0, 1, -1] == pad  # window 2: tokens 76–117, their EOS, then padding
    assert ids[0, 2, :3].tolist() == [bos, eos, pad]  # window 3 empty


@pytest.mark.parametrize("max_token_length,positions", [(None, 77), (150, 152), (225, 227)])
@pytest.mark.parametrize("clip_skip", [None, 2])
@torch.no_grad()
def test_sdxl_long_prompts_match_sd_scripts(wide, max_token_length: int | None, positions: int,
                                            clip_skip: int | None) -> None:
    parts = wide["sdxl"]
    parts.set_prompt_encoding(clip_skip, max_token_length)  # SDXL ignores clip_skip, as sd-scripts
    tok1, tok2 = parts.tokenizers
    te1, te2 = parts.text_encoders
    # sd-scripts sets tokenizer2's pad id to 0, the id of "!" in the real vocabulary; the tiny one pads with "!" too
    assert tok2.pad_token == "!" and tok1.pad_token_id == tok1.eos_token_id
    ids1, ids2 = kohya_tokens(tok1, CAPTIONS, max_token_length), kohya_tokens(tok2, CAPTIONS, max_token_length)
    got_ids = parts.family.tokenize(parts, CAPTIONS)
    assert torch.equal(got_ids[0], ids1) and torch.equal(got_ids[1], ids2)
    hidden1, hidden2, pool2 = kohya_sdxl_hidden(tok1, tok2, te1, te2, ids1, ids2)
    got = parts.family.encode_prompts(parts, CAPTIONS)
    expected = torch.cat([hidden1, hidden2], dim=-1)
    assert got["encoder_hidden_states"].shape == expected.shape == (len(CAPTIONS), positions, 64)
    torch.testing.assert_close(got["encoder_hidden_states"], expected)
    assert got["text_embeds"].shape == pool2.shape == (len(CAPTIONS), 32)
    torch.testing.assert_close(got["text_embeds"], pool2)


@torch.no_grad()
def test_sdxl_pooled_embedding_is_the_first_window_s(wide) -> None:
    """Only the first 75 tokens decide the pooled embedding: captions alike there pool alike."""
    parts = wide["sdxl"]
    parts.set_prompt_encoding(None, 225)
    head = " ".join(["a"] * 75)
    out = parts.family.encode_prompts(parts, [head + " red cat", head + " blue dog"])
    torch.testing.assert_close(out["text_embeds"][0], out["text_embeds"][1])
    assert not torch.allclose(out["encoder_hidden_states"][0], out["encoder_hidden_states"][1])


@pytest.mark.parametrize("family", list(TINY))
@pytest.mark.parametrize("max_token_length,positions", [(None, 32), (150, 62), (225, 92)])
@torch.no_grad()
def test_built_in_tiny_models_use_their_own_window(family: str, max_token_length: int | None,
                                                   positions: int) -> None:
    """The tiny models' window is 32 tokens: 150 / 225 encode 2 / 3 windows of 30 caption tokens each."""
    parts = get_family(family).load(ModelSection(pretrained_model_name_or_path=TINY[family]))
    parts.set_prompt_encoding(None, max_token_length)
    out = parts.family.encode_prompts(parts, CAPTIONS[:2])
    assert out["encoder_hidden_states"].shape[:2] == (2, positions)
    if max_token_length:  # the second window is encoded on its own, BOS first: caption tokens 31–60
        tok, te = parts.tokenizers[0], parts.text_encoders[0]
        ids = tok(CAPTIONS[1], padding="max_length", max_length=positions, truncation=True,
                  return_tensors="pt").input_ids[0]
        window = torch.cat([ids[:1], ids[31:61], ids[-1:]])[None]
        states = te(window, output_hidden_states=True).hidden_states
        second = states[-2] if family == "sdxl" else states[-1]
        if family != "sdxl":
            second = te.final_layer_norm(second)
        width = second.shape[-1]
        torch.testing.assert_close(out["encoder_hidden_states"][1, 31:61, :width], second[0, 1:31])


def test_text_cache_keys_follow_the_settings(tmp_path: Path) -> None:
    parts = get_family("sd1").load(ModelSection(pretrained_model_name_or_path="tiny-sd1"))
    enc = BatchEncoder(parts, torch.device("cpu"), torch.float32, True, True, seed=0, disk_dir=tmp_path)
    ids = {}
    for setting in [(None, None), (1, 75), (2, None), (None, 150), (None, 225), (2, 225)]:
        parts.set_prompt_encoding(*setting)
        ids[setting] = enc.text_model_id
    assert ids[(None, None)] == ids[(1, 75)] == enc.model_id  # the defaults keep the existing cache
    assert len({ids[s] for s in ids if s != (1, 75)}) == 5


def test_disk_cache_of_another_setting_is_not_reused(tmp_path: Path) -> None:
    parts = get_family("sd1").load(ModelSection(pretrained_model_name_or_path="tiny-sd1"))
    captions = ["a red cat", CAPTIONS[3]]
    BatchEncoder(parts, torch.device("cpu"), torch.float32, True, True, seed=0, disk_dir=tmp_path) \
        ._prefill_text(captions, len(captions), None)
    parts.set_prompt_encoding(2, 225)
    enc = BatchEncoder(parts, torch.device("cpu"), torch.float32, True, True, seed=0, disk_dir=tmp_path)
    enc._prefill_text(captions, len(captions), None)
    with torch.no_grad():
        expected = parts.family.encode_prompts(parts, captions)["encoder_hidden_states"]
    got = enc.text_conditioning(captions)["encoder_hidden_states"]
    assert got.shape == (2, 92, 32)
    torch.testing.assert_close(got, expected)


@torch.no_grad()
def test_samples_are_encoded_as_training_encodes(wide) -> None:
    """At the defaults the sample kwargs equal diffusers' own prompt encoding; with long prompts and clip skip
    they are the training conditioning (and the pipeline renders with them)."""
    for family in ("sd1", "sdxl"):
        parts = wide[family]
        parts.set_prompt_encoding(None, None)
        kwargs = parts.family.sample_prompt_kwargs(parts, "a red cat", "blurry")
        own = parts.pipeline.encode_prompt(prompt="a red cat", negative_prompt="blurry", device="cpu",
                                           num_images_per_prompt=1, do_classifier_free_guidance=True)
        names = ["prompt_embeds", "negative_prompt_embeds"] if family == "sd1" else \
            ["prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"]
        for name, value in zip(names, own):
            torch.testing.assert_close(kwargs[name], value)
    parts = get_family("sd1").load(ModelSection(pretrained_model_name_or_path="tiny-sd1"))
    parts.set_prompt_encoding(2, 225)
    kwargs = parts.family.sample_prompt_kwargs(parts, CAPTIONS[4])
    cond = parts.family.encode_prompts(parts, [CAPTIONS[4]])["encoder_hidden_states"]
    assert torch.equal(kwargs["prompt_embeds"], cond) and kwargs["negative_prompt_embeds"].shape == (1, 92, 32)
    out = parts.pipeline(**kwargs, width=64, height=64, num_inference_steps=1, output_type="latent",
                         generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 4, 8, 8) and torch.isfinite(out.images).all()


@pytest.mark.parametrize("train_text_encoder", [False, True])
def test_tiny_run_with_long_prompts_and_clip_skip(tmp_path: Path, image_dir: Path, monkeypatch,
                                                  train_text_encoder: bool) -> None:
    """Two steps on SD1 with max_token_length 225 and clip_skip 2: the UNet is conditioned on 3 windows (92
    positions in the tiny model), from the text cache or from the text encoder being trained; samples too."""
    for caption in image_dir.glob("*.txt"):
        caption.write_text("colour block, " * 8, encoding="utf-8")  # 96 tokens: three windows of 30
    family = type(get_family("sd1"))
    shapes, seen, original = [], set(), family.encode_prompts

    def recording(self, parts, captions):
        out = original(self, parts, captions)
        shapes.append((tuple(out["encoder_hidden_states"].shape), parts.prompt_encoding.clip_skip,
                       out["encoder_hidden_states"].requires_grad))
        seen.update(captions)
        return out

    monkeypatch.setattr(family, "encode_prompts", recording)
    cfg = load_config(sets=[
        f'data.train_data_dir="{image_dir}"', f'output.output_dir="{tmp_path / "runs"}"', "data.resolution=64",
        "train.max_train_steps=2", "network.network_dim=2", "train.max_token_length=225", "train.clip_skip=2",
        f"network.train_text_encoder={str(train_text_encoder).lower()}",
        f"sample.prompts=['{'a long sample prompt, ' * 5} --w 64 --h 64 --s 1']"])  # 100 tokens
    result = api.train(cfg)
    assert {s[:2] for s in shapes} == {((1, 92, 32), 2)}  # captions, and the samples rendered with the LoRA
    assert len(list((result.run_dir / "samples").glob("step*.png"))) == 2  # at step 0 and at the end
    assert any(c.startswith("a long sample prompt") for c in seen)  # the renderer encodes as training does
    assert any(s[2] for s in shapes) == train_text_encoder  # the chunked encoding carries the TE's gradients
    weights = load_file(result.lora_path)
    assert any(k.startswith("lora_te_") for k in weights) == train_text_encoder
    assert all(torch.isfinite(v).all() for v in weights.values())
