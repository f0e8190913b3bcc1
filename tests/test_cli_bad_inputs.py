"""Bad files and folders given to the CLI: one clear message and exit code, never a traceback,
and nothing written anywhere (a snapshot of the whole tmp tree, an `outside/` folder included)."""
from __future__ import annotations

import json

import pytest
from conftest import tiny_overrides
from data_fixtures import snapshot

from trainer.cli import main


@pytest.fixture
def area(tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("keep me")
    return tmp_path


def cli(tmp, argv, code, *fragments, capsys):
    """main(argv) returns `code`, prints every fragment on stderr, no traceback, and writes nothing."""
    before = snapshot(tmp)
    assert main([str(a) for a in argv]) == code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    for f in fragments:
        assert f in err, (f, err)
    assert snapshot(tmp) == before
    return err


# ------------------------------------------------------------------ --job files (7)
def test_job_file_missing(area, capsys):
    cli(area, ["train", "--job", area / "nope.json"], 2, "--job", "an existing job JSON file", capsys=capsys)


def test_job_file_relative_and_missing_names_the_folder_looked_in(area, capsys, monkeypatch):
    monkeypatch.chdir(area)
    cli(area, ["train", "--job", "jobs/nope.json"], 2, "looked in", str(area), capsys=capsys)


def test_job_is_a_directory(area, capsys):
    cli(area, ["train", "--job", area / "outside"], 2, "a file, not a folder", capsys=capsys)


def test_job_not_json(area, capsys):
    (area / "job.json").write_text("rank = 4\n")
    cli(area, ["train", "--job", area / "job.json"], 2, "valid JSON", capsys=capsys)


def test_job_binary_file(area, capsys):
    (area / "job.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\xfa" * 10)
    cli(area, ["train", "--job", area / "job.json"], 2, "UTF-8", capsys=capsys)


def test_job_utf16_without_bom_is_named(area, capsys):
    (area / "job.json").write_bytes(json.dumps({"rank": 4}).encode("utf-16-le"))
    cli(area, ["train", "--job", area / "job.json"], 2, "UTF-16 without a byte-order mark", capsys=capsys)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig"])
def test_job_with_a_byte_order_mark_is_read(area, capsys, encoding):
    """PowerShell's `>` writes UTF-16 with a BOM: the content is a valid job, so it is read (then its bad
    field is reported by name, which proves the text was understood)."""
    (area / "job.json").write_text(json.dumps({"rank": 0, "base_model": "x"}), encoding=encoding)
    cli(area, ["train", "--job", area / "job.json"], 2, "rank = 0 is invalid", capsys=capsys)


def test_job_json_of_the_wrong_shape(area, capsys):
    (area / "job.json").write_text("[1, 2]")
    cli(area, ["train", "--job", area / "job.json"], 2, "a JSON object", capsys=capsys)


# ------------------------------------------------------------------ check --lora / --base (6)
def test_check_lora_is_not_a_safetensors_file(area, capsys, tiny_sd15):
    (area / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    cli(area, ["check", "--lora", area / "passwd", "--base", tiny_sd15], 2, "is not a readable .safetensors file",
        capsys=capsys)


def test_check_lora_etc_passwd(area, capsys, tiny_sd15):
    cli(area, ["check", "--lora", "/etc/passwd", "--base", tiny_sd15], 2, "/etc/passwd", "not a readable",
        capsys=capsys)


def test_check_lora_missing(area, capsys, tiny_sd15):
    cli(area, ["check", "--lora", area / "gone.safetensors", "--base", tiny_sd15], 2, "does not exist",
        capsys=capsys)


def test_check_lora_is_a_folder(area, capsys, tiny_sd15):
    cli(area, ["check", "--lora", area / "outside", "--base", tiny_sd15], 2, "is a folder", capsys=capsys)


def test_check_base_missing(area, capsys, tiny_lora):
    cli(area, ["check", "--lora", tiny_lora, "--base", area / "nope.safetensors"], 2, "--base", "does not exist",
        capsys=capsys)


def test_check_base_is_a_folder_that_is_no_model(area, capsys, tiny_lora):
    cli(area, ["check", "--lora", tiny_lora, "--base", area / "outside"], 2, "not a diffusers model",
        capsys=capsys)


@pytest.fixture
def tiny_lora(tmp_path_factory):
    from safetensors.torch import save_file
    import torch

    p = tmp_path_factory.mktemp("lora") / "x.safetensors"
    save_file({"a": torch.zeros(1)}, str(p), {"ss_new_sd_model_hash": "0" * 64})
    return p


# ------------------------------------------------------------------ folders the run writes to (5)
@pytest.mark.parametrize("field,flag", [("output_dir", "--output-dir"), ("jobs_dir", "--jobs-dir")])
def test_output_folder_is_an_existing_file(area, capsys, tiny_sd15, sample_dataset, field, flag):
    """Was a hang: the training finished, then the save looped on mkdir forever. Now refused up front."""
    (area / "taken").write_text("a file")
    job = area / "job.json"
    job.write_text(json.dumps(tiny_overrides(area, tiny_sd15, sample_dataset)))
    cli(area, ["train", "--job", job, flag, area / "taken"], 2, f"{field} = ", "is a file, not a folder",
        capsys=capsys)


def test_output_folder_below_a_file(area, capsys, tiny_sd15, sample_dataset):
    (area / "taken").write_text("a file")
    job = area / "job.json"
    job.write_text(json.dumps(tiny_overrides(area, tiny_sd15, sample_dataset, output_dir=str(area / "taken" / "sub"))))
    cli(area, ["train", "--job", job], 2, "output_dir", "on the way there is a file", capsys=capsys)


def test_cache_folder_is_a_file(area, capsys, tiny_sd15, sample_dataset):
    (area / "taken").write_text("a file")
    job = area / "job.json"
    job.write_text(json.dumps(tiny_overrides(area, tiny_sd15, sample_dataset, cache_dir=str(area / "taken"))))
    cli(area, ["train", "--job", job], 2, "cache_dir", "is a file", capsys=capsys)


def test_save_lora_into_a_file_path_fails_at_once(area):
    """The library path too (Save LoRA node): an ExportError instead of an endless loop."""
    import torch

    from trainer.errors import ExportError
    from trainer.export import save_lora

    (area / "taken").write_text("a file")
    before = snapshot(area)
    with pytest.raises(ExportError, match="is a file, not a folder"):
        save_lora(area / "taken", "x", {"a": torch.zeros(1)}, {}, {})
    assert snapshot(area) == before


def test_an_unexpected_error_is_one_line_not_a_traceback(area, capsys, monkeypatch):
    import trainer.cli as cli_mod

    def boom(_):
        raise RuntimeError("something broke")

    monkeypatch.setattr(cli_mod, "cmd_presets", boom)
    monkeypatch.delenv("LORA_STUDIO_DEBUG", raising=False)
    cli(area, ["presets"], 3, "internal error: RuntimeError: something broke", "LORA_STUDIO_DEBUG=1",
        capsys=capsys)
