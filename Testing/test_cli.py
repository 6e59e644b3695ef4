import json
import subprocess
import sys

import pytest

from ssl3d.cli import main


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["torch"] and "voco-v1" in info["presets"] and info["devices"][0] == "cpu"


def test_help_is_readable(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    assert "--quick" in capsys.readouterr().out


def test_usage_errors_exit_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["info", "--bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    with pytest.raises(SystemExit) as exc:
        main(["nosuchcommand"])
    assert exc.value.code == 2


def test_user_error_exit_2_and_error_event(tmp_path, capsys):
    events = tmp_path / "e.jsonl"
    assert main(["demo", "--device", "tpu", "--out", str(tmp_path / "o"), "--events", str(events)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --device must be auto, cpu, cuda or cuda:N, got 'tpu'."]
    assert json.loads(events.read_text().splitlines()[-1])["event"] == "error"
    assert not (tmp_path / "o").exists()


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "ssl3d", "info", "--presets"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "vf-v2-cpu" in result.stdout
