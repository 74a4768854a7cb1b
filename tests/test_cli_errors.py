"""Input errors end every stage with one line on stderr and exit status 2, never a traceback.

Covers generate, train (config files, --set, --resume), decode, export-nprint and repair, plus the
config checks (unknown keys, types, ranges) and the "no such dataset" check behind them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from netdiffusion.cli import main as cli_main
from netdiffusion.model.config import PRESETS, ConfigError, load_config


def _one_line_error(capsys: pytest.CaptureFixture, command: str, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.startswith("netdiffusion ")]
    assert len(lines) == 1 and lines[0].startswith(f"netdiffusion {command}: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# -- generate ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("extra", "needle"), [
    (["--classes", "nosuch"], "nosuch"),
    (["--count", "0"], "--count 0"),
    (["--sampler", "foo"], "unknown sampler 'foo'"),
    (["--batch", "-1"], "--batch -1"),
    (["--batch", "0"], "--batch 0"),
    (["--steps", "-3"], "--steps -3"),
    (["--steps", "0"], "--steps 0"),
])
def test_generate_bad_arguments(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                extra: list[str], needle: str) -> None:
    out = tmp_path / "gen"
    rc = cli_main(["generate", "--model", str(tiny_model), "--output", str(out), "--count", "3", *extra])
    _one_line_error(capsys, "generate", rc, needle)
    assert not out.exists()  # checked before anything is written


def test_generate_not_a_model(small_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = cli_main(["generate", "--model", str(small_dataset), "--output", str(tmp_path / "g"), "--count", "1"])
    _one_line_error(capsys, "generate", rc, str(small_dataset), "not a model directory")
    rc = cli_main(["generate", "--model", str(tmp_path / "nope"), "--output", str(tmp_path / "g"), "--count", "1"])
    _one_line_error(capsys, "generate", rc, "no such model directory")


@pytest.mark.parametrize("kwargs", [{"steps": -3}, {"steps": 0}, {"batch": 0}, {"batch": -1}, {"count": 0}])
def test_generate_library_rejects_counts_below_one(tiny_model: Path, tmp_path: Path, kwargs: dict) -> None:
    from netdiffusion.model.generate import generate

    with pytest.raises(ValueError, match="at least 1"):
        generate(tiny_model, tmp_path / "g", **{"count": 1, **kwargs}, images=False)


def test_debug_env_reraises(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETDIFFUSION_DEBUG", "1")
    with pytest.raises(ValueError, match="no classes"):
        cli_main(["generate", "--model", str(tiny_model), "--output", str(tmp_path / "g"), "--classes", "nosuch"])


# -- train: config and inputs --------------------------------------------------------------------------

def _train(data: Path, out: Path, *extra: str) -> int:
    return cli_main(["train", "--data", str(data), "--output", str(out), *extra])


@pytest.mark.parametrize(("extra", "needles"), [
    (["--config", "nosuch"], ["nosuch", "no such config file", "tiny"]),
    (["--config", "tiny", "--set", "training.steps=abc"], ["training.steps", "integer", "'abc'"]),
    (["--config", "tiny", "--set", "training.batch_size=0"], ["training.batch_size", "at least 1"]),
    (["--config", "tiny", "--set", "training.steps=0"], ["training.steps", "at least 1"]),
    (["--config", "tiny", "--set", "training.stepz=3"], ["'training.stepz'", "known keys of training", "steps"]),
    (["--config", "tiny", "--set", "model.dim=-4"], ["model.dim", "at least 1"]),
    (["--config", "tiny", "--set", "training.steps"], ["expected KEY=VALUE"]),
])
def test_train_bad_config(small_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                          extra: list[str], needles: list[str]) -> None:
    out = tmp_path / "model"
    _one_line_error(capsys, "train", _train(small_dataset, out, *extra), *needles)
    assert not out.exists()


def test_train_bad_config_files(small_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("training:\n  steps: 3\n  lr: [1\n")
    line = _one_line_error(capsys, "train", _train(small_dataset, tmp_path / "m", "--config", str(bad_yaml)),
                           str(bad_yaml), "invalid YAML", "line ")
    assert "yaml." not in line
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"model": {"dim": 32,}}')
    _one_line_error(capsys, "train", _train(small_dataset, tmp_path / "m", "--config", str(bad_json)),
                    str(bad_json), "invalid JSON", "line 1")
    wrong_type = tmp_path / "bad2.json"
    wrong_type.write_text('{"model": {"dim": "abc"}}')
    _one_line_error(capsys, "train", _train(small_dataset, tmp_path / "m", "--config", str(wrong_type)),
                    "model.dim", "integer", "'abc'")
    typo = tmp_path / "typo.json"
    typo.write_text('{"modle": {"dim": 32}, "preset": "tiny"}')
    _one_line_error(capsys, "train", _train(small_dataset, tmp_path / "m", "--config", str(typo)),
                    "'modle'", "known keys", "model")
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- 1\n")
    _one_line_error(capsys, "train", _train(small_dataset, tmp_path / "m", "--config", str(not_mapping)),
                    "must be a mapping")
    assert not (tmp_path / "m").exists()


def test_train_no_such_dataset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _one_line_error(capsys, "train", _train(tmp_path / "nonexist", tmp_path / "m", "--config", "tiny"),
                    "nonexist: no such dataset")
    assert not (tmp_path / "m").exists()


def test_train_resume_without_checkpoint(small_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
                                         ) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "model.json").write_text('{"keep": "me"}')
    rc = _train(small_dataset, out, "--config", "tiny", "--resume")
    _one_line_error(capsys, "train", rc, "no checkpoint in", str(out), "nothing to resume", "drop --resume")
    assert sorted(p.name for p in out.iterdir()) == ["model.json"]
    assert json.loads((out / "model.json").read_text()) == {"keep": "me"}


# -- config checks ---------------------------------------------------------------------------------------

def test_every_preset_and_shipped_override_validates() -> None:
    for name in PRESETS:
        cfg = load_config(name, backend="sd" if name.startswith("sd") else "native")
        assert cfg["preset"] == name
    # the override shapes tests, docs and pipelines use
    load_config({"preset": "tiny", "init_from": "/base", "lora": {"r": 4, "alpha": 4},
                 "training": {"steps": 3, "keep_checkpoints": True, "checkpoint_every": 0, "lr": 3e-3}})
    load_config({"preset": "sd-tiny", "training": {"steps": 3}}, backend="sd")
    assert load_config({"preset": "tiny", "training": {"lr": "1e-4"}})["training"]["lr"] == 1e-4  # YAML 1e-4


@pytest.mark.parametrize(("override", "match"), [
    ({"preset": "tiny", "training": {"stepz": 3}}, r"unknown config key 'training\.stepz'; known keys of training"),
    ({"preset": "tiny", "modle": {"dim": 32}}, r"unknown config key 'modle'"),
    ({"preset": "tiny", "training": {"steps": 0}}, r"training\.steps: must be at least 1"),
    ({"preset": "tiny", "training": {"steps": 2.5}}, r"training\.steps: must be an integer"),
    ({"preset": "tiny", "training": {"gradient_checkpointing": "yes"}}, r"must be true or false"),
    ({"preset": "tiny", "training": {"mixed_precision": "fp8"}}, r"must be one of no, fp16, bf16"),
    ({"preset": "tiny", "training": "fast"}, r"config training: must be a mapping"),
    ({"preset": "tiny", "model": {"dim": 30, "heads": 4}}, r"multiple of model\.heads"),
    ({"preset": "sd-tiny", "model": {"dim": 32}}, r"unknown config key 'model'"),
])
def test_config_rejects(override: dict, match: str) -> None:
    backend = "sd" if override["preset"].startswith("sd") else "native"
    with pytest.raises(ConfigError, match=match):
        load_config(override, backend=backend)


# -- dataset paths ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["decode", "export-nprint", "repair"])
def test_no_such_dataset(command: str, small_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    typo = small_dataset / "typo"  # its parent is a dataset: must not be read instead
    flags = ["--input", str(typo), "--output", str(tmp_path / "out")]
    _one_line_error(capsys, command, cli_main([command, *flags]), f"{typo}: no such dataset")


def test_not_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _one_line_error(capsys, "export-nprint", cli_main(["export-nprint", "-i", str(tmp_path), "-o",
                                                       str(tmp_path / "o")]), "not an encoded dataset")


def test_library_no_such_dataset(small_dataset: Path, tmp_path: Path) -> None:
    from netdiffusion.decode import decode_dataset
    from netdiffusion.nprint_csv import export_dataset
    from netdiffusion.repair import repair_dataset

    for fn in (export_dataset, decode_dataset, repair_dataset):
        with pytest.raises(FileNotFoundError, match="typo: no such dataset"):
            fn(small_dataset / "typo", tmp_path / fn.__name__)
    # a shard file still reads its folder's dataset
    shard = next(small_dataset.glob("*.parquet"))
    assert export_dataset(shard, tmp_path / "one")["flows"] > 0


@pytest.mark.parametrize("command", ["decode", "export-nprint", "repair"])
def test_a_dataset_whose_fields_json_disagrees_with_its_shards(command: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    """Regression (QA): a fields.json of another layout, a damaged fields.json or one that is not a
    layout ended in 'matrix shape (5, 1408) does not match layout width 960', a bare JSON error or
    'columns are not a complete nPrint layout' without the file; a layout without an IP header
    crashed repair ('need at least one array to stack')."""
    from netdiffusion.dataset import write_fields, write_shard
    from netdiffusion.fields import Layout
    from netdiffusion.repair.noise import random_packets

    data = tmp_path / "d"
    write_shard(random_packets(Layout(), 2, 3), data / "part-0.parquet")
    flags = ["--input", str(data), "--output", str(tmp_path / "out")]
    write_fields(data, Layout(["ipv4", "tcp"]))
    _one_line_error(capsys, command, cli_main([command, *flags]), f"{data / 'part-0.parquet'}: nPrint rows of 1408",
                    f"{data / 'fields.json'} lists 960")
    (data / "fields.json").write_text("[")
    _one_line_error(capsys, command, cli_main([command, *flags]), f"{data / 'fields.json'}: ")
    (data / "fields.json").write_text(json.dumps(Layout().columns[::-1]))
    _one_line_error(capsys, command, cli_main([command, *flags]), f"{data / 'fields.json'}: columns are not")
    if command == "repair":
        no_ip = tmp_path / "no_ip"
        write_fields(no_ip, Layout(["tcp", "udp"]))
        write_shard(random_packets(Layout(["tcp", "udp"]), 1, 2), no_ip / "part-0.parquet")
        rc = cli_main(["repair", "--input", str(no_ip), "--output", str(tmp_path / "o2")])
        _one_line_error(capsys, "repair", rc, f"{no_ip}: its layout (tcp, udp) has no ipv4 or ipv6 header")


# -- validate ----------------------------------------------------------------------------------------

def test_validate_missing_or_empty_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A missing path was validated as one "malformed" file (exit 1); a folder without pcaps raised."""
    rc = cli_main(["validate", "--input", str(tmp_path / "nosuch"), "--report", str(tmp_path / "r.json")])
    _one_line_error(capsys, "validate", rc, "no such file or folder")
    assert not (tmp_path / "r.json").exists()
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, "validate", cli_main(["validate", "--input", str(tmp_path / "empty")]), "no *.pcap files")
    rc = cli_main(["validate", "--input", str(tmp_path / "empty"), "--threshold", "nosuch=1"])
    _one_line_error(capsys, "validate", rc, "--threshold")


@pytest.mark.parametrize("command", ["encode", "decode", "export-nprint", "import-nprint", "train", "generate",
                                     "repair", "evaluate", "run"])
def test_an_output_folder_that_is_a_file_is_one_line(command: str, tmp_path: Path, capsys) -> None:
    """`--output` / `--out` naming an existing file (or a path below one) was a FileExistsError
    traceback after the command had read its inputs (QA); now one line before any work."""
    taken = tmp_path / "taken.pcap"
    taken.write_bytes(b"x")
    inputs = {"encode": ["--input", str(tmp_path)], "decode": ["--input", str(tmp_path)],
              "export-nprint": ["--input", str(tmp_path)], "import-nprint": ["--input", str(tmp_path)],
              "train": ["--data", str(tmp_path), "--config", "tiny"], "generate": ["--model", str(tmp_path)],
              "repair": ["--input", str(tmp_path)],
              "evaluate": ["--real", str(tmp_path), "--synthetic", str(tmp_path), "--train", str(tmp_path)],
              "run": ["--preset", "tiny"]}[command]
    flag = "--out" if command == "run" else "--output"
    rc = cli_main([command, *inputs, flag, str(taken)])
    _one_line_error(capsys, command, rc, f"{flag} {taken}: is a file, not a folder")
    rc = cli_main([command, *inputs, flag, str(taken / "below")])
    _one_line_error(capsys, command, rc, f"{taken} is a file, not a folder")
    assert taken.read_bytes() == b"x"


def test_a_report_path_that_is_a_folder_or_cannot_be_made_is_one_line(tmp_path: Path, capsys) -> None:
    from scapy.all import IP, UDP, Ether, wrpcap

    (tmp_path / "pcaps").mkdir()
    wrpcap(str(tmp_path / "pcaps" / "one.pcap"),
           [Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=40000, dport=40001)])
    (tmp_path / "folder").mkdir()
    rc = cli_main(["validate", "--input", str(tmp_path / "pcaps"), "--report", str(tmp_path / "folder"),
                   "--no-tcpreplay"])
    _one_line_error(capsys, "validate", rc, f"--report {tmp_path / 'folder'}: is a folder, not a file")
    # no file can be made in /proc (was: "no free temporary name beside ...", a traceback)
    rc = cli_main(["validate", "--input", str(tmp_path / "pcaps"), "--report", "/proc/netdiffusion-report.json",
                   "--no-tcpreplay"])
    _one_line_error(capsys, "validate", rc, "cannot create a file in this folder", "/proc/netdiffusion-report.json")
    # the file system refuses after the work (sysfs: no permission, even for root; or read-only):
    # one line naming the report, not its temporary name, exit status 1 (was: a traceback)
    rc = cli_main(["validate", "--input", str(tmp_path / "pcaps"), "--report", "/sys/netdiffusion-report.json",
                   "--no-tcpreplay"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("netdiffusion validate: error: /sys/netdiffusion-report.json: ")


def test_help_states_each_default_once() -> None:
    """``--help`` said "(default: all) (default: None)": the help's own default, then argparse's."""
    import re

    from netdiffusion.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in commands.items():
        text = " ".join(sub.format_help().split())
        assert "(default: None)" not in text, name
        for option in re.split(r"\s(?=--?[a-z])", text):
            assert option.count("(default:") <= 1, (name, option)


@pytest.mark.parametrize("command", ["generate", "run", "submit", "schedule"])
def test_classes_naming_no_class_is_an_error_not_all_classes(command: str, tmp_path: Path, capsys) -> None:
    """QA: ``--classes ,`` silently generated every class."""
    argv = {"generate": ["generate", "--model", str(tmp_path / "m"), "--output", str(tmp_path / "g")],
            "run": ["run", "--out", str(tmp_path / "o")],
            "submit": ["submit", "--count", "1", "--out", str(tmp_path / "o")],
            "schedule": ["schedule", "--count", "1"]}[command]
    assert cli_main([*argv, "--classes", " , "]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no class names" in err[0] and err[0].startswith(f"netdiffusion {command}: "), err
    assert not any(tmp_path.iterdir())  # refused before anything was written


# -- damaged shards (QA on nDPI captures) -----------------------------------------------------------------

def _dataset_with_a_cut_shard(small_dataset: Path, tmp_path: Path) -> tuple[Path, Path, int]:
    """A copy of ``small_dataset`` whose first shard is cut to 300 bytes; returns the copy, the cut
    shard and how many flows the other shards hold."""
    import shutil

    from netdiffusion.dataset import read_shard

    copy = tmp_path / "damaged"
    shutil.copytree(small_dataset, copy)
    shards = sorted(copy.glob("*.parquet"))
    assert len(shards) > 1
    cut = shards[0]
    cut.write_bytes(cut.read_bytes()[:300])
    flows = sum(len(set(read_shard(s).flow_id.tolist())) for s in shards[1:])
    return copy, cut, flows


@pytest.mark.parametrize("command", ["decode", "export-nprint", "repair"])
def test_a_damaged_shard_is_skipped_and_counted(command: str, small_dataset: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """Regression (QA): one truncated shard ended decode / export-nprint / repair with 'Parquet magic bytes not
    found' and nothing written; like evaluate, they now name the shard and the reason, convert the
    other shards' flows and list the skipped shard in the summary."""
    import json

    damaged, cut, flows = _dataset_with_a_cut_shard(small_dataset, tmp_path)
    rc = cli_main([command, "--input", str(damaged), "--output", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert f"{cut}: unreadable shard skipped" in caplog.text and "Traceback" not in captured.err
    summary = json.loads(captured.out[captured.out.index("{"):])
    assert summary["flows"] == flows
    assert [s["file"] for s in summary["skipped_shards"]] == [str(cut)]
    assert "magic" in summary["skipped_shards"][0]["reason"].lower()


@pytest.mark.parametrize("command", ["decode", "export-nprint", "repair"])
def test_no_readable_shard_is_an_error(command: str, small_dataset: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    """Every shard damaged (or none at all): one error line, exit 2, not an empty output that passes for
    a result (export-nprint of a dataset without shards used to exit 0 with 0 flows)."""
    import shutil

    damaged = tmp_path / "all_damaged"
    shutil.copytree(small_dataset, damaged)
    for shard in damaged.glob("*.parquet"):
        shard.write_bytes(b"PAR1 not really")
    _one_line_error(capsys, command, cli_main([command, "-i", str(damaged), "-o", str(tmp_path / "o1")]),
                    "none of its", "shards could be read")
    empty = tmp_path / "no_shards"
    empty.mkdir()
    shutil.copy(small_dataset / "fields.json", empty)
    _one_line_error(capsys, command, cli_main([command, "-i", str(empty), "-o", str(tmp_path / "o2")]),
                    "no Parquet shards")


@pytest.mark.parametrize("value", [5, -128])
def test_nprint_values_other_than_one_zero_minus_one_are_named_not_read_as_bits(
        value: int, small_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        caplog: pytest.LogCaptureFixture) -> None:
    """Regression (QA): a shard from another writer with values other than 1 / 0 / -1 (pyarrow
    writes any int8) was read as bits: positive as set, negative as absent in some rules and not
    in others, and the repaired rows kept the odd values (pure random rows with 30% of columns
    any int8: TCP errors in 4 of 40 pcaps). Such a shard is named and skipped with the value and
    its place; when no shard reads, the command fails with one line."""
    import shutil

    from netdiffusion.dataset import read_shard, write_shard

    copy = tmp_path / "odd"
    shutil.copytree(small_dataset, copy)
    shards = sorted(copy.glob("*.parquet"))
    odd = read_shard(shards[0])
    odd.nprint[3, 17] = value
    write_shard(odd, shards[0])  # pyarrow's writer: ours takes only 1 / 0 / -1
    rc = cli_main(["repair", "--input", str(copy), "--output", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out[captured.out.index("{"):])
    assert [s["file"] for s in summary["skipped_shards"]] == [str(shards[0])]
    assert summary["skipped_shards"][0]["reason"] == (
        f"nprint values must be 1 / 0 / -1: 1 are not (the first, {value}, at row 3, column 17)")
    assert f"{shards[0]}: unreadable shard skipped" in caplog.text
    for shard in shards[1:]:
        shard.unlink()
    _one_line_error(capsys, "repair", cli_main(["repair", "-i", str(copy), "-o", str(tmp_path / "o2")]),
                    "none of its 1 shards could be read", "1 / 0 / -1")


def test_import_nprint_without_csv_files_and_serve_port_out_of_range(tmp_path: Path, capsys) -> None:
    """Import from a folder with no *.nprint / *.csv wrote an empty dataset and exited 1 without a
    word; `serve --port 99999` was an OverflowError traceback from bind() (QA)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.pcap").write_bytes(b"x")
    rc = cli_main(["import-nprint", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")])
    _one_line_error(capsys, "import-nprint", rc, "no nPrint CSV files (*.nprint, *.csv) under", str(tmp_path / "in"))
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as stop:
        cli_main(["serve", "--port", "99999", "--state-dir", str(tmp_path / "state")])
    assert stop.value.code == 2 and "--port: 99999 is not a port number (0-65535)" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()


def test_repair_part_rows_below_one_is_a_usage_error(small_dataset: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    rc = cli_main(["repair", "-i", str(small_dataset), "-o", str(tmp_path / "p"), "--part-rows", "0"])
    _one_line_error(capsys, "repair", rc, "--part-rows 0: must be at least 1")
    assert not (tmp_path / "p").exists()
    assert cli_main(["repair", "-i", str(small_dataset), "-o", str(tmp_path / "p"), "--part-rows", "100"]) == 0
    assert json.loads((tmp_path / "p" / "repair_report.json").read_text())["totals"]["flows"] > 100
