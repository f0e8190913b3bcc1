"""Config: presets keep the guide's intent, every field is validated with a message a person can act on."""
from __future__ import annotations

import json

import pytest

from trainer import ConfigError, TrainConfig, apply_preset, get_preset
from trainer.config import SCHEDULERS, field_names
from trainer.presets import PRESETS


def test_presets_follow_the_guide():
    foto, atelier, galerie = (apply_preset(k) for k in ("fotostudio", "atelier", "galerie"))
    assert foto.resolution == 512 and not foto.train_text_encoder
    assert atelier.max_train_steps > foto.max_train_steps
    assert atelier.learning_rate < foto.learning_rate and atelier.rank > foto.rank
    assert galerie.resolution == 640 and galerie.train_text_encoder and PRESETS["galerie"].min_vram_gb >= 16
    assert get_preset("Atelier – Detailtreue").key == "atelier"
    assert (PRESETS["fotostudio"].min_images, PRESETS["fotostudio"].max_images) == (10, 30)
    assert (PRESETS["galerie"].min_images, PRESETS["galerie"].max_images) == (75, 150)


def test_every_field_overridable():
    cfg = apply_preset("galerie", {"rank": 4, "resolution": 768, "lr_scheduler": "linear"})
    assert (cfg.rank, cfg.resolution, cfg.lr_scheduler) == (4, 768, "linear")
    assert cfg.train_text_encoder  # untouched preset values stay


def test_json_round_trip():
    cfg = apply_preset("atelier", {"trigger_token": "sks", "unet_target_modules": ["to_q", "to_v"]})
    again = TrainConfig.from_json(cfg.to_json())
    assert again == cfg
    # a job record (config nested under "config") is a valid job file too
    assert TrainConfig.from_json(json.dumps({"id": "x", "config": cfg.to_dict()})) == cfg


# (field, bad value, words the message must contain)
BAD = [
    ("resolution", 128, "256"), ("resolution", 2048, "1536"), ("resolution", 516, "multiple of 8"),
    ("learning_rate", 1e-7, "1e-06"), ("max_train_steps", 0, "steps must be > 0"),
    ("lr_scheduler", "cosine_annealing", "constant_with_warmup"), ("rank", 0, "1 to 256"),
    ("alpha", -1, "alpha"), ("lora_dropout", 0.95, "0.9"), ("text_encoder_lr", 0.5, "0.01"),
    ("lr_warmup_steps", -1, "5 %"), ("lr_num_cycles", 0, "restarts"), ("lr_power", 0, "polynomial"),
    ("train_batch_size", 0, "1 to 256"), ("gradient_accumulation_steps", 0, "1 to 1024"),
    ("max_grad_norm", -1, "clipping"), ("adam_beta1", 1.0, "0.9"), ("adam_beta2", -0.1, "0.999"),
    ("adam_weight_decay", 2, "1e-2"), ("adam_epsilon", 0, "1e-8"), ("mixed_precision", "fp8", "bf16"),
    ("snr_gamma", -1, "5.0"), ("noise_offset", 2, "0.05"), ("prediction_type", "x0", "v_prediction"),
    ("model_type", "flux", "sdxl"), ("seed", -1, "42"), ("checkpointing_steps", -5, "quarter"),
    ("checkpoints_total_limit", 0, "2–5"), ("unet_target_modules", ["conv_in"], "to_q"),
    ("text_encoder_target_modules", [], "q_proj"), ("save_precision", "int8", "fp16"), ("name", " ", "name"),
    ("resolution", 512.5, "integer"), ("learning_rate", float("nan"), "number"),
    ("train_text_encoder", "yes", "true or false"), ("gradient_checkpointing", 1, "true or false"),
    ("dataset", 5, "text"), ("trigger_token", None, "text"),
    ("preview_every", -2, "quarter"), ("preview_seed", -3, "whole number"), ("preview_sampling_steps", 0, "20–30"),
    ("preview_guidance", 0.5, "7.5"), ("num_class_images", 0, "50–200"), ("class_sampling_steps", 0, "25"),
    ("class_seed", -1, "whole number"), ("prior_loss_weight", -1, "1.0"), ("preview_prompts", "a cat", "JSON list"),
    ("safety_negative_terms", [1], "JSON list"), ("bias_check_prompts", None, "JSON list"),
    ("report_to", ["mlflow"], "tensorboard"), ("negative_prompt", 3, "text"), ("class_prompt", 3, "text"),
    ("class_data_dir", 3, "text"), ("caption_dropout", 1.0, "0.05"), ("keep_tags", -1, "trigger tag"),
    ("aspect_buckets", "yes", "true or false"), ("shuffle_tags", 0, "true or false"), ("resume_from", 3, "text"), ("with_prior_preservation", "y", "true or false"),
    ("compile", "max", "'auto'"),
    ("num_threads", -1, "CPU cores"),
]


@pytest.mark.parametrize("field,value,words", BAD)
def test_invalid_field_names_field_value_range_and_fix(field, value, words):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**{field: value}).validate()
    (problem,) = [p for p in e.value.problems if p.field == field]
    text = str(problem)
    assert field in text and repr(value) in text and "allowed" in text and "Fix:" in text
    assert words in text


def test_every_field_is_covered_by_validation_tests():
    validated = {f for f, _, _ in BAD}
    free_text = {"preset", "base_model", "model_config_dir", "tokenizer_dir", "dataset", "trigger_token", "placeholder",
                 "output_dir", "jobs_dir", "cache_dir", "center_crop", "random_flip", "train_text_encoder",
                 "gradient_checkpointing", "test_mode"}
    assert set(field_names()) - validated - free_text == set()


def test_prior_preservation_needs_a_class_prompt():
    with pytest.raises(ConfigError, match="class_prompt"):
        TrainConfig(with_prior_preservation=True).validate()
    TrainConfig(with_prior_preservation=True, class_prompt="a photo of a fox").validate()


def test_guide_scheduler_list_exactly():
    assert set(SCHEDULERS) == {"linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                               "constant_with_warmup"}


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as e:
        TrainConfig(resolution=10, learning_rate=0, max_train_steps=0).validate()
    assert {p.field for p in e.value.problems} >= {"resolution", "learning_rate", "max_train_steps"}


def test_unknown_field_is_an_error():
    with pytest.raises(ConfigError, match="learnig_rate"):
        TrainConfig.from_dict({"learnig_rate": 1e-4})


def test_test_mode_allows_tiny_resolution_only_when_asked():
    TrainConfig(resolution=64, test_mode=True).validate()
    with pytest.raises(ConfigError):
        TrainConfig(resolution=64).validate()


def test_integer_valued_floats_become_integers_from_the_field_type():
    cfg = TrainConfig.from_dict({"rank": 4.0, "max_train_steps": 10.0, "lr_warmup_steps": 2.0, "seed": 7.0, "alpha": 4, "resolution": 512.0})
    assert (cfg.rank, cfg.max_train_steps, cfg.seed) == (4, 10, 7) and type(cfg.rank) is int
    assert cfg.alpha == 4.0 and type(cfg.alpha) is float and type(cfg.resolution) is int
    cfg.validate()
    assert TrainConfig(train_text_encoder=1).train_text_encoder == 1  # booleans are never guessed
    with pytest.raises(ConfigError, match="an integer"):
        TrainConfig(rank=4.5).validate()


def test_every_field_has_one_definition_with_help():
    from trainer.config import field_table, spec

    table = field_table()
    assert list(table) == field_names()
    for name, row in table.items():
        assert row["help"].strip() and row["group"], name
        if row["type"] in ("int", "float"):
            assert row["min"] <= row["default"] <= row["max"] or name == "resolution", name
        if "choices" in row and row["type"] == "str":
            assert row["default"] in row["choices"], name
    assert spec("learning_rate").lo == 1e-6  # the guide's floor


def test_presets_command_lists_every_field_with_its_help(capsys):
    from trainer.cli import main
    from trainer.config import field_table

    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name, row in field_table().items():
        assert f"  {name} (" in out and row["help"] in out, name
