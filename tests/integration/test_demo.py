"""`edgebench demo --exit`: the README's first command, end to end."""

from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_demo_exit_prints_the_result_table(tmp_path: Path) -> None:
    result = run_cli(
        tmp_path,
        "demo",
        "--exit",
        "--http-port",
        "0",
        "--grpc-port",
        "0",
        "-p",
        "32",
        "-n",
        "16",
        "-r",
        "2",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for header in ("test", "t/s", "TTFT ms", "J/tok", "pp32", "tg16"):
        assert header in result.stdout
    assert "demo-agent" in result.stdout and "F32" in result.stdout
    assert "agent demo-agent online" in result.stderr
    # the token is saved where the CLI looks, and the next command is named
    token = (tmp_path / "config" / "admin-token").read_text().strip()
    assert token.startswith("eba_") and "edgebench jobs submit" in result.stderr
    assert (tmp_path / "data" / "demo" / "coordinator.db").is_file()
    # a second demo reuses the generated model and the same store
    again = run_cli(
        tmp_path, "demo", "--exit", "--http-port", "0", "--grpc-port", "0", "-r", "1", timeout=300
    )
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "config" / "admin-token").read_text().strip() == token  # reused
