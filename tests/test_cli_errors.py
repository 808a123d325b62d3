"""The CLI's error policy: every user error is one line on stderr and exit code 2; `--help` answers at once."""

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
from PIL import Image

from annotator.cli import main

PYTHON = sys.executable


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "annotator.cli", *args], capture_output=True, text=True, timeout=timeout)


def write_image(path: Path) -> None:
    Image.new("RGB", (16, 12), (200, 30, 30)).save(path)


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


def test_a_missing_file_exits_2_with_one_line_and_no_traceback_from_a_real_process(tmp_path):
    result = run_cli("eval", "--gt", str(tmp_path / "nothing.jsonl"), "--pred", str(tmp_path / "nothing.json"))
    assert_one_line_error(result.returncode, result.stderr, "no such file", "nothing.jsonl")
    assert result.stdout == ""


def test_an_unknown_flag_exits_2_with_one_line(capsys):
    code = main(["--frobnicate"])
    assert_one_line_error(code, capsys.readouterr().err, "unrecognized arguments: --frobnicate")


def test_a_malformed_calibration_line_is_named_by_its_line_number(tmp_path, capsys):
    data = tmp_path / "cal.jsonl"
    data.write_text(
        '{"image": "a.png", "expression": "the cat"}\n{"image": "b.png", "expression": \n', encoding="utf-8"
    )
    model = tmp_path / "model"
    model.mkdir()
    code = main(["find-heads", "--model", str(model), "--data", str(data), "--device", "cpu"])
    assert_one_line_error(code, capsys.readouterr().err, "cal.jsonl:2: not valid JSON")


def test_a_malformed_expressions_line_is_named_by_its_line_number(tmp_path, capsys):
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"image": "a.png", "expression": "the cat"}\n{"image": "b.png"}\n', encoding="utf-8")
    code = main(["prelabel", str(tmp_path), "--expressions", str(queries)])
    assert_one_line_error(code, capsys.readouterr().err, "queries.jsonl:2: needs 'expression'")


def test_a_model_folder_that_does_not_exist_exits_2_naming_it(tmp_path, capsys):
    code = main(["prelabel", str(tmp_path), "--expression", "the cat", "--model", str(tmp_path / "no-model")])
    assert_one_line_error(code, capsys.readouterr().err, "no-model", "no such model folder")


def test_prelabel_4bit_on_a_cpu_exits_2_saying_it_needs_a_cuda_gpu(tmp_path, capsys):
    from annotator.synthetic.planted import PLANTED_MODEL_DIR

    write_image(tmp_path / "a.png")
    args = ["prelabel", str(tmp_path), "--expression", "the red one", "--model", str(PLANTED_MODEL_DIR)]
    code = main([*args, "--device", "cpu", "--4bit"])
    assert_one_line_error(code, capsys.readouterr().err, "4-bit loading of", "needs a CUDA GPU")


def test_prelabel_with_a_preset_not_downloaded_offline_says_how_to_download_it(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    write_image(tmp_path / "a.png")
    code = main(["prelabel", str(tmp_path), "--expression", "the cat", "--model", "llava-1.5-13b", "--device", "cpu"])
    assert_one_line_error(
        code, capsys.readouterr().err, "llava-hf/llava-1.5-13b-hf is not downloaded", "models download llava-1.5-13b"
    )


def test_an_unknown_hub_model_exits_2_naming_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code = main(["find-heads", "--model", "nobody/no-such-llava", "--synthetic", "2", "--device", "cpu"])
    assert_one_line_error(code, capsys.readouterr().err, "nobody/no-such-llava")


def test_device_cuda_without_a_gpu_exits_2_with_one_line(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    code = main(["find-heads", "--model", "nobody/no-such-llava", "--synthetic", "2", "--device", "cuda"])
    assert_one_line_error(code, capsys.readouterr().err, "--device cuda", "no CUDA GPU")


def test_prelabel_ray_without_ray_installed_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the ray extra were not installed
    code = main(["prelabel", str(tmp_path), "--expression", "the cat", "--ray"])
    assert_one_line_error(code, capsys.readouterr().err, "--ray", "pip install 'annotator[ray]'")


def test_heads_file_that_is_not_one_exits_2_naming_it(tmp_path, capsys):
    heads = tmp_path / "heads.json"
    heads.write_text(json.dumps({"model": "x", "heads": []}), encoding="utf-8")
    code = main(
        [
            "prelabel",
            str(tmp_path),
            "--expression",
            "the cat",
            "--model",
            "nobody/no-such-llava",
            "--heads",
            str(heads),
            "--device",
            "cpu",
        ]
    )
    assert_one_line_error(code, capsys.readouterr().err, "heads.json", "not a valid heads file")


def test_without_the_desktop_app_the_bare_command_says_so_and_exits_2(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "annotator.ui.app", None)
    code = main([])
    assert_one_line_error(code, capsys.readouterr().err, "desktop app is not installed")


def test_the_bare_command_opens_the_desktop_app_on_the_folder(tmp_path, monkeypatch):
    calls = []
    app = types.ModuleType("annotator.ui.app")
    app.run_app = lambda folder, argv: calls.append((folder, argv)) or 0
    monkeypatch.setitem(sys.modules, "annotator.ui.app", app)
    assert main([str(tmp_path)]) == 0
    assert calls == [(str(tmp_path), [str(tmp_path)])]


@pytest.mark.parametrize("command", [[], ["find-heads"], ["prelabel"], ["eval"]])
def test_help_answers_with_an_example(command):
    """--help is fast because it imports no heavy library (the next test), not a time measured here."""
    result = run_cli(*command, "--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout


def test_help_imports_no_heavy_library():
    code = (
        "import sys, contextlib, io\n"
        "from annotator.cli import main\n"
        "for cmd in ([], ['find-heads'], ['prelabel'], ['eval']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        main([*cmd, '--help'])\n"
        "print(sorted(m for m in ('torch', 'transformers', 'matplotlib', 'PySide6', 'numpy') if m in sys.modules))\n"
    )
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "[]"
