"""kohya network settings → lorakit's network section.

Expected values are written from kohya_ss `kohya_gui/lora_gui.py` train_model (LoRA_type → network_module +
network_args), sd-scripts `networks/lora.py` create_network and LyCORIS `lycoris/kohya.py` create_network /
`lycoris/config.py` PRESET — not from lorakit's output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lorakit.config.import_network_tables import ATTENTION, TE_ATTENTION, TRANSFORMER
from lorakit.config.import_networks import kron_halves, lokr_full_fits
from lorakit.config.importers import import_file
from lorakit.config.loader import Layer, resolve
from lorakit.config.schema import LorakitConfig
from lorakit.networks.findings import network_findings
from lorakit.networks.targets import selection_findings

TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "kohya-configs"
SD1_25 = ",".join(["8"] * 12 + ["16"] + ["4"] * 12)
SD1_25_ALPHAS = ",".join(["4"] * 12 + ["0"] + ["2"] * 12)
SDXL_23 = ",".join(["0"] + ["8"] * 21 + ["0"])


def _network(tmp_path: Path, src: dict[str, Any] | str, gui: bool) -> tuple[dict[str, Any], dict[str, str], Any]:
    """Import `src` (a GUI dict or TOML text); return the network values, the unmapped network keys with reasons,
    and the result; and prove the values pass lorakit's validation, config validate's network checks included."""
    f = tmp_path / ("k.json" if gui else "k.toml")
    f.write_text(json.dumps(src) if gui else str(src), encoding="utf-8")
    r = import_file(f)
    cfg = resolve([Layer("imported", r.values)])
    assert [x.message for x in network_findings(cfg) + selection_findings(cfg) if x.error] == []
    unmapped = {k: why for k, _, why in r.unmapped if not k.startswith(("learning_rate", "dataset"))}
    if gui:  # every source key is accounted for
        assert set(r.mapped) | set(r.empty) | {k for k, _, _ in r.unmapped} >= set(src)
    return r.values.get("network", {}), unmapped, r


BASE = {"learning_rate": 1e-4, "network_dim": 16, "network_alpha": 8}
# LoRA_type and the GUI's own keys → (expected network values (subset), expected unmapped keys)
GUI_CASES: list[tuple[str, dict[str, Any], dict[str, Any], set[str]]] = [
    ("standard ignores conv", {"LoRA_type": "Standard", "conv_dim": 32, "conv_alpha": 32, "factor": -1,
                               "LyCORIS_preset": "full", "dora_wd": True},
     {"network_module": "lora", "network_dim": 16, "network_alpha": 8.0}, set()),
    # sd-scripts networks/lora.py LoRAModule.forward: neuron dropout on lora_down's output, rank dropout (per
    # sample, kept ranks × 1/(1 − p)), module dropout; train_model passes rank/module_dropout only when truthy
    ("kohya locon", {"LoRA_type": "Kohya LoCon", "conv_dim": 16, "conv_alpha": 8, "rank_dropout": 0.1,
                     "module_dropout": 0, "network_dropout": 0.1},
     {"network_module": "locon", "conv_dim": 16, "conv_alpha": 8.0, "network_dropout": 0.1,
      "dropout_placement": "kohya", "rank_dropout": 0.1, "module_dropout": None}, set()),
    # LyCORIS (lycoris/modules/*.py forward): module dropout as kohya's; LoKr's rank dropout is peft's LoKr's;
    # LoCon's drops rows of ΔW (not lorakit's), LoHa's is unscaled (peft's rescales); no neuron dropout unless
    # bypass_mode (where it drops the module's output)
    ("lycoris locon dropouts", {"LoRA_type": "LyCORIS/LoCon", "conv_dim": 4, "rank_dropout": 0.1,
                                "module_dropout": 0.2, "network_dropout": 0.3, "bypass_mode": False},
     {"network_module": "locon", "module_dropout": 0.2, "rank_dropout": None, "network_dropout": None},
     {"rank_dropout"}),
    ("lycoris lokr dropouts", {"LoRA_type": "LyCORIS/LoKr", "rank_dropout": 0.1, "module_dropout": 0.2,
                               "rank_dropout_scale": True},
     {"network_module": "lokr", "rank_dropout": 0.1, "module_dropout": 0.2}, set()),
    ("lycoris loha dropouts", {"LoRA_type": "LyCORIS/LoHa", "rank_dropout": 0.1, "module_dropout": 0.2,
                               "network_dropout": 0.1, "bypass_mode": True},
     {"network_module": "loha", "rank_dropout": None, "module_dropout": 0.2, "network_dropout": None},
     {"rank_dropout", "network_dropout"}),
    ("lycoris locon dora", {"LoRA_type": "LyCORIS/LoCon", "conv_dim": 8, "conv_alpha": 4, "dora_wd": True,
                            "LyCORIS_preset": "full", "use_tucker": False, "bypass_mode": False},
     {"network_module": "locon", "conv_dim": 8, "conv_alpha": 4.0, "use_dora": True}, set()),
    ("gui LoCon is LyCORIS", {"LoRA_type": "LoCon", "conv_dim": 4, "conv_alpha": 0, "LyCORIS_preset": "full"},
     {"network_module": "locon", "conv_dim": 4, "conv_alpha": 4.0}, set()),  # alpha 0 = rank in LyCORIS
    ("loha dora refused", {"LoRA_type": "LyCORIS/LoHa", "conv_dim": 4, "conv_alpha": 4, "dora_wd": True},
     {"network_module": "loha", "conv_dim": 4, "conv_alpha": 4.0}, {"dora_wd"}),
    ("loha attn-mlp", {"LoRA_type": "LyCORIS/LoHa", "conv_dim": 4, "conv_alpha": 4, "LyCORIS_preset": "attn-mlp"},
     {"network_module": "loha", "target_modules": TRANSFORMER}, set()),
    ("locon attn-mlp is lora", {"LoRA_type": "LyCORIS/LoCon", "conv_dim": 4, "LyCORIS_preset": "attn-mlp"},
     {"network_module": "lora"}, set()),
    ("locon attn-only", {"LoRA_type": "LyCORIS/LoCon", "LyCORIS_preset": "attn-only"},
     {"network_module": "lora", "target_modules": ATTENTION, "text_encoder_target_modules": TE_ATTENTION}, set()),
    ("lokr unet-only", {"LoRA_type": "LyCORIS/LoKr", "factor": 4, "LyCORIS_preset": "unet-only", "conv_dim": 8},
     {"network_module": "lokr", "lokr_factor": 4, "train_text_encoder": False, "conv_dim": 8}, set()),
    ("lokr full dimension", {"LoRA_type": "LyCORIS/LoKr", "network_dim": 100000, "network_alpha": 1,
                             "conv_dim": 100000, "conv_alpha": 1, "factor": 6, "decompose_both": False},
     {"network_module": "lokr", "network_dim": 1024, "network_alpha": 1024.0, "conv_dim": 1024,
      "conv_alpha": 1024.0, "lokr_factor": 6}, set()),
    ("lokr full dimension, factor 2", {"LoRA_type": "LyCORIS/LoKr", "network_dim": 100000, "factor": 2},
     {"network_module": "lokr", "lokr_factor": 2}, {"network_dim"}),
    ("lokr tucker, norms", {"LoRA_type": "LyCORIS/LoKr", "use_cp": True, "train_norm": True, "use_scalar": True},
     {"network_module": "lokr"}, {"use_cp", "train_norm", "use_scalar"}),
    ("lokr decompose_both text is on", {"LoRA_type": "LyCORIS/LoKr", "network_dim": 4, "factor": -1,
                                        "decompose_both": False},
     {"network_module": "lokr", "network_dim": 4}, {"decompose_both"}),
    ("dylora", {"LoRA_type": "LyCORIS/DyLoRA", "conv_dim": 64, "factor": 6, "unit": 4},
     {"network_dim": 16}, {"LoRA_type"}),
    ("kohya dylora", {"LoRA_type": "Kohya DyLoRA", "unit": 4}, {}, {"LoRA_type"}),
    ("lora-fa", {"LoRA_type": "LoRA-FA"}, {}, {"LoRA_type"}),
    ("ia3", {"LoRA_type": "LyCORIS/iA3", "train_on_input": True}, {}, {"LoRA_type"}),
    ("glora", {"LoRA_type": "LyCORIS/GLoRA"}, {}, {"LoRA_type"}),
    ("boft", {"LoRA_type": "LyCORIS/BOFT"}, {}, {"LoRA_type"}),
    ("native fine-tuning", {"LoRA_type": "LyCORIS/Native Fine-Tuning"}, {}, {"LoRA_type"}),
    ("flux", {"LoRA_type": "Flux1"}, {}, {"LoRA_type"}),
    ("standard block dims", {"LoRA_type": "Standard", "block_dims": SD1_25, "block_alphas": SD1_25_ALPHAS,
                             "down_lr_weight": "1,1,1,1,1,1,1,1,1,1,1,0", "conv_block_dims": "",
                             "loraplus_lr_ratio": 16},
     {"block_dims": [8] * 12 + [16] + [4] * 12, "block_alphas": [4.0] * 12 + [16.0] + [2.0] * 12},
     {"down_lr_weight", "loraplus_lr_ratio"}),
    ("block dims of the wrong length", {"LoRA_type": "Standard", "block_dims": "4,4,4", "block_alphas": "1,1,1"},
     {"network_module": "lora"}, {"block_dims", "block_alphas"}),
    ("sdxl block dims", {"LoRA_type": "Standard", "sdxl": True, "block_dims": SDXL_23},
     {"block_dims": [0] + [8] * 21 + [0]}, set()),
    ("sdxl needs 23", {"LoRA_type": "Standard", "sdxl": True, "block_dims": SD1_25}, {}, {"block_dims"}),
    # sd-scripts create_network reads conv_block_dims only when block_dims is given
    ("conv_block_dims without block_dims are inert", {"LoRA_type": "Kohya LoCon", "conv_dim": 4,
                                                      "conv_block_dims": SD1_25},
     {"network_module": "locon", "conv_dim": 4, "conv_block_dims": None}, set()),
    ("conv_block_dims", {"LoRA_type": "Kohya LoCon", "conv_dim": 4, "conv_alpha": 1, "block_dims": SD1_25,
                         "conv_block_dims": SD1_25, "conv_block_alphas": SD1_25_ALPHAS},
     {"network_module": "locon", "conv_dim": 4, "block_dims": [8] * 12 + [16] + [4] * 12,
      "conv_block_dims": [8] * 12 + [16] + [4] * 12, "conv_block_alphas": [4.0] * 12 + [16.0] + [2.0] * 12},
     set()),
]


@pytest.mark.parametrize("name, gui, expected, unmapped", GUI_CASES, ids=[c[0] for c in GUI_CASES])
def test_gui_lora_types(tmp_path: Path, name: str, gui: dict[str, Any], expected: dict[str, Any],
                        unmapped: set[str]) -> None:
    net, got, r = _network(tmp_path, {**BASE, **gui}, gui=True)
    assert {k: net.get(k) for k in expected} == expected
    assert set(got) == unmapped
    if not any(k in expected for k in ("network_module",)) and "LoRA_type" in unmapped:
        assert "network_module" not in net  # a type lorakit lacks is listed, not turned into another


def _toml(module: str, args: list[str], extra: str = "") -> str:
    return (f'learning_rate = 1e-4\nnetwork_dim = 16\nnetwork_alpha = 8\nnetwork_module = "{module}"\n'
            f"network_args = {json.dumps(args)}\n{extra}")


# sd-scripts network_module + network_args → (expected network values (subset), expected unmapped keys)
TOML_CASES: list[tuple[str, str, dict[str, Any], set[str]]] = [
    ("lora", _toml("networks.lora", []), {"network_module": "lora", "network_dim": 16, "network_alpha": 8.0}, set()),
    ("locon", _toml("networks.lora", ["conv_dim=4", "conv_alpha=1"]),
     {"network_module": "locon", "conv_dim": 4, "conv_alpha": 1.0}, set()),
    ("locon alpha absent = 1", _toml("networks.lora", ["conv_dim=8"]),
     {"network_module": "locon", "conv_dim": 8, "conv_alpha": 1.0}, set()),
    ("conv_dim 0 = no conv", _toml("networks.lora", ["conv_dim=0", "conv_alpha=4"]),
     {"network_module": "lora", "conv_dim": None, "conv_alpha": None}, set()),
    ("dropouts and lr weights", _toml("networks.lora", ["rank_dropout=0.1", "module_dropout=0.2",
                                                        "up_lr_weight=cosine", "mid_lr_weight=0.5",
                                                        "block_lr_zero_threshold=0.1", "loraplus_lr_ratio=4"]),
     {"network_module": "lora", "rank_dropout": 0.1, "module_dropout": 0.2},
     {"network_args.up_lr_weight", "network_args.mid_lr_weight",
                                  "network_args.block_lr_zero_threshold", "network_args.loraplus_lr_ratio"}),
    ("block dims", _toml("networks.lora", [f"block_dims={SD1_25}", f"block_alphas={SD1_25_ALPHAS}"]),
     {"block_dims": [8] * 12 + [16] + [4] * 12, "block_alphas": [4.0] * 12 + [16.0] + [2.0] * 12}, set()),
    ("block dims not numbers", _toml("networks.lora", ["block_dims=1,2,x"]), {"block_dims": None},
     {"network_args.block_dims"}),
    ("block alphas alone are inert", _toml("networks.lora", [f"block_alphas={SD1_25_ALPHAS}"]),
     {"block_alphas": None}, set()),
    # create_network: conv_block_dims with block_dims adds the 3×3 convs even without conv_dim; conv_block_alphas
    # absent = conv_alpha, itself absent = 1 (get_block_dims_and_alphas)
    ("conv block dims make a locon", _toml("networks.lora", [f"block_dims={SD1_25}", f"conv_block_dims={SD1_25}"]),
     {"network_module": "locon", "conv_dim": None, "conv_alpha": 1.0,
      "conv_block_dims": [8] * 12 + [16] + [4] * 12}, set()),
    ("conv block alphas, 0 = rank", _toml("networks.lora", [f"block_dims={SD1_25}", f"conv_block_dims={SD1_25}",
                                                            f"conv_block_alphas={SD1_25_ALPHAS}"]),
     {"network_module": "locon", "conv_block_alphas": [4.0] * 12 + [16.0] + [2.0] * 12}, set()),
    ("conv block dims alone are inert", _toml("networks.lora", [f"conv_block_dims={SD1_25}",
                                                                f"conv_block_alphas={SD1_25_ALPHAS}"]),
     {"network_module": "lora", "conv_block_dims": None, "conv_block_alphas": None}, set()),
    ("conv block alphas need conv block dims", _toml("networks.lora", ["conv_dim=4", f"block_dims={SD1_25}",
                                                                       f"conv_block_alphas={SD1_25_ALPHAS}"]),
     {"network_module": "locon", "conv_dim": 4, "conv_block_alphas": None}, set()),
    ("conv_alpha unparsed without conv_dim", _toml("networks.lora", [f"block_dims={SD1_25}", "conv_alpha=4",
                                                                     f"conv_block_dims={SD1_25}"]),
     {"network_module": "locon", "conv_alpha": None}, {"network_args.conv_alpha"}),
    ("conv block dims at 0", _toml("networks.lora", [f"block_dims={SD1_25}", f"conv_block_dims={','.join(['0'] * 25)}"]),
     {"network_module": "lora", "conv_block_dims": None}, set()),
    ("not key=value", _toml("networks.lora", ["conv_dim"]), {"network_module": "lora"}, {"network_args[0]"}),
    ("alpha 0 = rank", 'network_module = "networks.lora"\nnetwork_dim = 32\nnetwork_alpha = 0\n',
     {"network_dim": 32, "network_alpha": 32.0}, set()),
    ("sd-scripts defaults", 'network_module = "networks.lora"\nlearning_rate = 1e-4\n',
     {"network_dim": 4, "network_alpha": 1.0}, set()),
    ("dylora", _toml("networks.dylora", ["unit=4"]), {}, {"network_module"}),
    ("lora_fa", _toml("networks.lora_fa", []), {}, {"network_module"}),
    ("lycoris default algo is lora = locon", _toml("lycoris.kohya", []), {"network_module": "locon"}, set()),
    ("lycoris locon dora", _toml("lycoris.kohya", ["algo=locon", "conv_dim=8", "conv_alpha=4", "dora_wd=True"]),
     {"network_module": "locon", "conv_dim": 8, "conv_alpha": 4.0, "use_dora": True}, set()),
    ("lycoris lora attn-mlp", _toml("lycoris.kohya", ["preset=attn-mlp", "algo=lora"]),
     {"network_module": "lora", "target_modules": None}, set()),
    ("lycoris loha attn-mlp", _toml("lycoris.kohya", ["preset=attn-mlp", "algo=loha", "conv_dim=4"]),
     {"network_module": "loha", "target_modules": TRANSFORMER, "conv_dim": None}, set()),
    ("lycoris lokr factor", _toml("lycoris.kohya", ["algo=lokr", "factor=8"]),
     {"network_module": "lokr", "lokr_factor": 8}, set()),
    ("lycoris lokr factor 0", _toml("lycoris.kohya", ["algo=lokr", "factor=0"]),
     {"network_module": "lokr", "lokr_factor": None}, {"network_args.factor"}),
    ("lycoris factor without lokr is inert", _toml("lycoris.kohya", ["algo=loha", "factor=8"]),
     {"network_module": "loha", "lokr_factor": None}, set()),
    ("lycoris conv_dim 0 turns convs off", _toml("lycoris.kohya", ["algo=locon", "conv_dim=0"]),
     {"network_module": "lora", "conv_dim": None}, set()),
    ("lycoris unet-transformer-only", _toml("lycoris.kohya", ["algo=lokr", "preset=unet-transformer-only"]),
     {"network_module": "lokr", "target_modules": TRANSFORMER, "train_text_encoder": False}, set()),
    ("lycoris unsupported preset", _toml("lycoris.kohya", ["algo=locon", "preset=unet-convblock-only"]),
     {"network_module": "locon"}, {"network_args.preset"}),
    ("lycoris preset file", _toml("lycoris.kohya", ["algo=loha", "preset=my_preset.toml"]),
     {"network_module": "loha"}, {"network_args.preset"}),
    ("lycoris unsupported args", _toml("lycoris.kohya", ["algo=lokr", "use_tucker=True", "rank_dropout=0.1",
                                                         "module_dropout=0", "train_norm=False", "use_scalar=1",
                                                         "wd_on_output=False", "rs_lora=True", "bypass_mode=True"]),
     {"network_module": "lokr", "rank_dropout": None},  # LokrModule.bypass_forward_diff: no rank dropout
     {"network_args.use_tucker", "network_args.use_scalar", "network_args.wd_on_output", "network_args.rs_lora"}),
    ("lycoris dora with lokr", _toml("lycoris.kohya", ["algo=lokr", "dora_wd=True"]),
     {"network_module": "lokr", "use_dora": None}, {"network_args.dora_wd"}),
    # train_network.py hands network_dropout to LyCORIS as 'dropout' unless network_args has one; LyCORIS applies
    # it only in bypass_mode (LoConModule.bypass_forward_diff: on lora_up's output), never in its rebuilt weight
    ("lycoris dropout wins", _toml("lycoris.kohya", ["algo=locon", "dropout=0.1", "bypass_mode=True"],
                                   "network_dropout = 0.3\n"),
     {"network_dropout": None}, {"network_args.dropout"}),
    ("lycoris drops nothing without bypass", _toml("lycoris.kohya", ["algo=locon"], "network_dropout = 0.1\n"),
     {"network_dropout": None}, set()),
    ("loha has no neuron dropout", _toml("lycoris.kohya", ["algo=loha"], "network_dropout = 0.1\n"),
     {"network_dropout": None}, set()),
    ("lycoris lokr rank dropout", _toml("lycoris.kohya", ["algo=lokr", "rank_dropout=0.25", "module_dropout=x"]),
     {"rank_dropout": 0.25, "module_dropout": None}, {"network_args.module_dropout"}),
    ("lycoris locon rank dropout", _toml("lycoris.kohya", ["algo=locon", "rank_dropout=0.25"]),
     {"rank_dropout": None}, {"network_args.rank_dropout"}),
    ("lycoris dylora", _toml("lycoris.kohya", ["algo=dylora", "block_size=4"]), {}, {"network_args.algo"}),
    ("lycoris ia3", _toml("lycoris.kohya", ["algo=ia3", "preset=ia3"]), {}, {"network_args.algo"}),
    ("lycoris full", _toml("lycoris.kohya", ["algo=full", "train_norm=True"]), {}, {"network_args.algo"}),
    ("lycoris lokr full dimension", 'network_module = "lycoris.kohya"\nnetwork_dim = 100000\nnetwork_alpha = 1\n'
     'network_args = ["preset=attn-mlp", "algo=lokr", "factor=6"]\n',
     {"network_module": "lokr", "network_dim": 1024, "network_alpha": 1024.0, "lokr_factor": 6,
      "target_modules": TRANSFORMER}, set()),
]


@pytest.mark.parametrize("name, text, expected, unmapped", TOML_CASES, ids=[c[0] for c in TOML_CASES])
def test_sd_scripts_network_args(tmp_path: Path, name: str, text: str, expected: dict[str, Any],
                                 unmapped: set[str]) -> None:
    net, got, r = _network(tmp_path, text, gui=False)
    assert {k: net.get(k) for k in expected} == expected  # None: not set (lorakit's default)
    if expected.get("network_module") is None and unmapped & {"network_module", "network_args.algo"}:
        assert "network_module" not in net
    assert set(got) == unmapped


def test_conv_alpha_default_and_inert_keys_are_reported(tmp_path: Path) -> None:
    _, _, r = _network(tmp_path, _toml("networks.lora", ["conv_dim=8"]), gui=False)
    assert any("conv_alpha is not set" in n for n in r.notes)
    _, _, r = _network(tmp_path, {**BASE, "LoRA_type": "Standard", "conv_dim": 32}, gui=True)
    assert r.mapped["conv_dim"].startswith("(inert: kohya_ss does not pass it for Standard")
    _, _, r = _network(tmp_path, _toml("networks.lora", [f"block_alphas={SD1_25_ALPHAS}", "foo=1"]), gui=False)
    assert "only together with block_dims" in r.mapped["network_args.block_alphas"]
    assert "does not read it" in r.mapped["network_args.foo"]
    _, _, r = _network(tmp_path, _toml("networks.lora", [f"conv_block_dims={SD1_25}",
                                                         f"conv_block_alphas={SD1_25_ALPHAS}"]), gui=False)
    assert "reads conv_block_dims only together with block_dims" in r.mapped["network_args.conv_block_dims"]
    assert "reads conv_block_alphas only together with block_dims" in r.mapped["network_args.conv_block_alphas"]


def test_lokr_factorisation_follows_lycoris() -> None:
    # what LyCORIS's factorization (lycoris/functional/general.py) returns; its docstring's 360/16 → (12, 30) is
    # stale, the code gives (15, 24)
    table = {(127, -1): (1, 127), (128, -1): (8, 16), (250, 2): (2, 125), (250, 8): (5, 50),
             (360, 16): (15, 24), (1024, 4): (4, 256), (1024, -1): (32, 32), (512, 8): (8, 64),
             (10240, 6): (5, 2048), (10240, 2): (2, 5120), (2048, 6): (4, 512)}
    assert {k: kron_halves(*k) for k in table} == table
    assert lokr_full_fits(6) and lokr_full_fits(-1) and not lokr_full_fits(2)


# Real configs: the network values read off each file by kohya's rules (the LyCORIS GUI types pass conv_dim /
# conv_alpha, factor and dora_wd; Standard passes none of them; a LoKr dim of 100000 is 'full dimension').
REAL = {
    "CyberLoRA_kohya_config.json": {"network_module": "lora", "network_dim": 32, "network_alpha": 16.0},
    "DerJimno_lora-sdxl-reg.json": {"network_module": "lora", "network_dim": 32, "network_alpha": 16.0},
    "headshots_train_config.json": {"network_module": "lora", "network_dim": 32, "network_alpha": 32.0},
    "kingaigfcash_kohya_config.json": {"network_module": "lora", "network_dim": 256, "network_alpha": 1.0},
    "kss_SDXL-1image-LoKr-prodigy.json": {"network_module": "lokr", "network_dim": 1024, "network_alpha": 1024.0,
                                          "conv_dim": 1024, "conv_alpha": 1024.0, "lokr_factor": 6},
    "kss_SDXL-AI_Now-AdamW.json": {"network_module": "lora", "network_dim": 32, "network_alpha": 32.0,
                                   "conv_dim": None},
    "kss_SDXL-LoHa-AI_Characters.json": {"network_module": "loha", "network_dim": 32, "network_alpha": 32.0,
                                         "conv_dim": 16, "conv_alpha": 16.0},
    "kss_SDXL-aitrepreneur-clothing.json": {"network_module": "lora", "network_dim": 128, "network_alpha": 1.0},
    "kss_SDXL-face-dogu_cat.json": {"network_module": "lora", "network_dim": 92, "network_alpha": 46.0},
    "kss_iA3-Prodigy-sd15.json": {"network_module": None},
    "kss_loha-sd15.json": {"network_module": "loha", "network_dim": 32, "network_alpha": 16.0, "conv_dim": 8,
                           "conv_alpha": 4.0},
    "kss_old_sdxl-loha-kBlueLeaf.json": {"network_module": "loha", "network_dim": 8, "conv_dim": 4},
    "kss_sd15-EDG-LoCon.json": {"network_module": "locon", "network_dim": 64, "network_alpha": 64.0,
                                "conv_dim": 32, "conv_alpha": 1.0},
    "kss_sd15-GLoRA.json": {"network_module": "lokr", "network_dim": 1024, "lokr_factor": 6},
    "kss_sd15-LoKr-v2.json": {"network_module": "lokr", "network_dim": 1024, "network_alpha": 1024.0},
    "kss_test_Diag-OFT-AdamW8bit-toml.json": {"network_module": None},
    "kss_test_DyLoRA-Adafactor-toml.json": {"network_module": None, "lokr_factor": None},
    "kss_test_locon-AdamW8bit.json": {"network_module": "locon", "conv_dim": 16, "conv_alpha": 8.0,
                                      "network_dropout": 0.1, "dropout_placement": "kohya", "rank_dropout": 0.1,
                                      "module_dropout": 0.1},
    "kss_test_loha-Prodigy.json": {"network_module": "loha", "network_dim": 8, "conv_dim": 4, "conv_alpha": 4.0},
    "OffLive_setting.toml": {"network_module": "lora", "network_dim": 8, "network_alpha": 1.0},
    "akegarasu_lora.toml": {"network_module": "lora", "network_dim": 32, "network_alpha": 16.0},
    "cybermeow_loha_config.toml": {"network_module": "loha", "network_dim": 8, "network_alpha": 4.0,
                                   "target_modules": TRANSFORMER},
    "cybermeow_lokr_config.toml": {"network_module": "lokr", "network_dim": 1024, "network_alpha": 1024.0,
                                   "lokr_factor": 6, "target_modules": TRANSFORMER},
    "cybermeow_lycoris_full_config.toml": {"network_module": None},
    "lycoris_kohya_lora_config.toml": {"network_module": "lora", "network_dim": 16, "network_alpha": 8.0},
    "motimalu_prodigy-01-eps.toml": {"network_module": "lora", "network_dim": 32, "network_alpha": 32.0},
}
REAL_UNMAPPED = {
    "kss_iA3-Prodigy-sd15.json": {"LoRA_type"},
    "kss_sd15-GLoRA.json": {"use_cp", "train_norm"},
    "kss_test_Diag-OFT-AdamW8bit-toml.json": {"LoRA_type"},
    "kss_test_DyLoRA-Adafactor-toml.json": {"LoRA_type"},
    "headshots_train_config.json": {"loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio"},
    "cybermeow_lycoris_full_config.toml": {"network_args.algo"},
}


def _has_network_settings(path: Path) -> bool:
    text = path.read_text(encoding="utf-8-sig")
    return "LoRA_type" in text or "network_module" in text


@pytest.mark.skipif(not TESTDATA.is_dir(), reason="../shared/testdata is not here")
def test_real_configs_network_settings() -> None:
    from lorakit.config.import_networks import NETWORK_KEYS

    files = sorted(p for p in TESTDATA.iterdir() if p.suffix in (".json", ".toml") and _has_network_settings(p))
    assert set(REAL) <= {p.name for p in files}
    for path in files:
        r = import_file(path)  # never an exception
        net = r.values.get("network", {})
        LorakitConfig.model_validate({"network": net})  # every mapped network value is one lorakit takes
        cfg = LorakitConfig.model_validate({"network": net, "model": {"family": r.values.get("model", {}).get(
            "family", "auto")}})
        assert [f.message for f in network_findings(cfg) if f.error] == [], path.name
        unmapped = {k for k, _, _ in r.unmapped
                    if k in NETWORK_KEYS or k.startswith("network_args") or k == "LoRA_type"}
        assert unmapped == REAL_UNMAPPED.get(path.name, set()), path.name
        if path.name in REAL:
            assert {k: net.get(k) for k in REAL[path.name]} == REAL[path.name], path.name
