"""The command line's own behaviour: version, help hints, checks made before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from edgebench import __version__
from edgebench.cli.main import app

CLOSED = "http://127.0.0.1:9"  # nothing listens: a check that reaches the network fails


def _run(*args: str) -> tuple[int, str]:
    """Exit code and output; an EdgebenchError (printed by main() as `error: ...`) is
    part of the output."""
    done = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    error = f"error: {done.exception}" if done.exit_code == 1 and done.exception else ""
    return done.exit_code, done.output + error


def test_version_flag_and_command_agree() -> None:
    assert _run("--version") == (0, f"{__version__}\n")
    assert _run("version") == (0, f"{__version__}\n")


def test_help_keeps_its_env_and_default_hints() -> None:
    code, text = _run("jobs", "submit", "--help")
    assert code == 0
    hints = ("[env var: EDGEBENCH_URL]", "[env var: EDGEBENCH_TOKEN]",
             "[default: (by model format)]", "[default: (2048)]", "[default: (auto)]")  # fmt: skip
    for hint in hints:
        assert hint in text, hint
    assert "--prompt-tokens" not in text  # a hidden alias, kept for one release


def test_old_long_names_still_work_as_hidden_aliases(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(60))
    code, text = _run(
        "jobs", "submit", "--model", str(model), "--prompt-tokens", "0", "--url", CLOSED
    )
    assert code == 2 and "--n-prompt: every value must be between 1" in text


def test_submit_refuses_an_impossible_matrix_before_any_upload(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(60))
    code, text = _run("jobs", "submit", "--model", str(model), "--variant", "int8",
                      "--url", CLOSED)  # fmt: skip
    assert code == 1 and "variant 'int8' cannot be made by llama_cpp" in text
    code, text = _run("jobs", "submit", "--model", str(model), "--backend", "onnx",
                      "--url", CLOSED)  # fmt: skip
    assert "backend onnx needs a onnx model" in text


def test_o_is_the_output_format_and_a_file_gets_a_hint() -> None:
    code, text = _run("results", "export", "-o", "out.csv", "--url", CLOSED)
    assert code == 2 and "write to a file with --out out.csv" in " ".join(text.split())


def test_enroll_says_it_wants_host_port_not_a_url() -> None:
    code, text = _run("agent", "enroll", "--coordinator", "http://10.0.0.5:8080", "--token", "t")
    said = " ".join(text.replace("│", " ").split())
    assert code == 2 and "without a scheme" in said and "HOST:PORT" in said


def test_commands_name_the_missing_extra(tmp_path: Path) -> None:
    """An agent-only install has no fastapi: `coordinator serve` says what to install."""
    code = (
        "import sys; sys.modules['fastapi'] = None; sys.argv = ['edgebench', *sys.argv[1:]];"
        "from edgebench.cli.main import main; main()"
    )
    for args in (["coordinator", "serve"], ["demo", "--exit"]):
        env = {"EDGEBENCH_HOME": str(tmp_path)}
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                              text=True, env=env, check=False)  # fmt: skip
        assert done.returncode == 1, done.stderr
        assert "needs the coordinator extra (fastapi is not installed)" in done.stderr
        assert (
            "pip install 'edgebench[coordinator" in done.stderr and "Traceback" not in done.stderr
        )


def test_a_bad_submitter_is_refused_before_any_upload(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(60))
    code, text = _run("jobs", "submit", "--model", str(model), "--submitter", "a b",
                      "--url", CLOSED)  # fmt: skip
    assert code == 2 and "--submitter" in text and "not reachable" not in text


def test_an_unknown_trust_tier_is_refused_before_any_upload(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(60))
    code, text = _run("jobs", "submit", "--model", str(model), "--tier", "root",
                      "--url", CLOSED)  # fmt: skip
    assert code == 2 and "tiers" in text and "not reachable" not in text
    code, text = _run("jobs", "submit", "--model", str(model), "--tier", "operator",
                      "--url", CLOSED)  # fmt: skip
    assert code == 1 and "not reachable" in text  # accepted, then the upload fails
