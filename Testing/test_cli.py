import json
import os
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


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc, where no folder can be created")
@pytest.mark.parametrize("command", [["demo", "--quick", "--events", "/proc/nope/e.jsonl"], ["info", "--events", "/proc/nope/x.jsonl"]])
def test_unwritable_events_target_is_a_user_error(command, tmp_path, capsys):
    out = tmp_path / "o"
    assert main([*command, *(["--out", str(out)] if command[0] == "demo" else [])]) == 2
    assert "/proc/nope" in _one_error_line(capsys)
    assert not out.exists()


def test_events_target_checked_before_anything_is_written(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["demo", "--quick", "--out", str(tmp_path / "o"), "--events", str(afile / "e.jsonl")]) == 2
    assert str(afile) in _one_error_line(capsys)
    assert main(["info", "--events", str(tmp_path)]) == 2
    assert "is a folder" in _one_error_line(capsys)
    assert not (tmp_path / "o").exists() and afile.read_text() == "x"


def test_demo_out_that_is_a_file(tmp_path, capsys):
    out = tmp_path / "demo_out"
    out.write_text("mine")
    assert main(["demo", "--quick", "--out", str(out)]) == 2
    assert _one_error_line(capsys).startswith(f"error: --out {out}: is a file")
    assert out.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["demo_out"]


def test_demo_seed_help_states_the_default(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "random seed of the job [0]" in " ".join(capsys.readouterr().out.split())


def _fake_command(monkeypatch, run):
    """Register a throw-away subcommand ``fake`` (``--out``, ``--events``) that calls ``run(args)``."""
    from ssl3d.cli import COMMANDS, register_command

    def add(parser):
        parser.add_argument("--out")
        parser.add_argument("--events")

    monkeypatch.setitem(COMMANDS, "fake", None)
    register_command("fake", "a test command", add, run)


def test_os_error_about_a_user_path_is_a_user_error(tmp_path, monkeypatch, capsys):
    def run(args):
        open(os.path.join(args.out, "sub", "file.txt"), "w")  # FileNotFoundError naming a file inside --out

    _fake_command(monkeypatch, run)
    events = tmp_path / "e.jsonl"
    assert main(["fake", "--out", str(tmp_path / "missing"), "--events", str(events)]) == 2
    line = _one_error_line(capsys)
    assert line == f"error: {tmp_path / 'missing' / 'sub' / 'file.txt'}: No such file or directory."
    assert json.loads(events.read_text())["message"] == line[len("error: "):]


def test_os_error_about_another_path_is_a_bug(tmp_path, monkeypatch, capsys):
    def run(args):
        open(os.path.join(os.path.dirname(__file__), "no-such-package-file"))

    _fake_command(monkeypatch, run)
    events = tmp_path / "e.jsonl"
    with pytest.raises(FileNotFoundError):
        main(["fake", "--out", str(tmp_path / "o"), "--events", str(events)])
    assert json.loads(events.read_text())["message"].startswith("internal error: FileNotFoundError")


def test_ctrl_c_exits_130_without_traceback(monkeypatch, capsys):
    def run(args):
        raise KeyboardInterrupt

    _fake_command(monkeypatch, run)
    assert main(["fake"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals to the own process")
def test_sigterm_before_a_command_watches_is_a_cancel(monkeypatch, capsys):
    """While a command still starts (imports torch, say) SIGTERM exits 130 with a line, not silently with -15."""
    import signal
    import time

    before = signal.getsignal(signal.SIGTERM)

    def run(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # a slow import
        raise AssertionError("not stopped")

    _fake_command(monkeypatch, run)
    started = time.monotonic()
    assert main(["fake"]) == 130 and time.monotonic() - started < 2
    assert capsys.readouterr().err == "cancelled: stopped by SIGTERM while starting\n"
    assert signal.getsignal(signal.SIGTERM) is before  # the process's own handler again


def test_events_target_is_the_error_channel(tmp_path, phantom, capsys):
    """A job that fails after its start: --events gets start + error, --out nothing."""
    from ssl3d.io import write_volume

    image = write_volume(phantom[0], tmp_path / "ct.nii.gz")
    events, out = tmp_path / "e.jsonl", tmp_path / "o"
    assert main(["inspect", "voco", "--model", str(tmp_path / "nobundle"), "--input", str(image), "--out", str(out),
                 "--events", str(events), "--device", "cpu"]) == 2
    line = _one_error_line(capsys)
    records = [json.loads(x) for x in events.read_text().splitlines()]
    assert [r["event"] for r in records] == ["start", "error"] and records[-1]["message"] == line[len("error: "):]
    assert not out.exists()


@pytest.mark.parametrize("option,value,extra", [
    ("--point", "-52.7,95.7,-255", ["segment", "--model", "m", "--input", "i.nii", "--output", "o.nii"]),
    ("--negative", "-1,-2,-3", ["segment", "--model", "m", "--input", "i.nii", "--output", "o.nii"]),
    ("--spacing", "-1.5,1.5,2", ["finetune", "--data", "d", "--out", "o"]),
])
def test_negative_coordinates_parse_as_written(option, value, extra):
    """``--point -52.7,95.7,-255`` (R < 0: half the body) is a value, not an unknown option."""
    from ssl3d.cli import _attach_negative_values, build_parser

    args = build_parser().parse_args(_attach_negative_values(extra + [option, value, "--device", "cpu"]))
    got = getattr(args, option[2:])
    assert (got[0] if isinstance(got, list) else got) == value and args.device == "cpu"


def test_negative_box_reaches_the_command(capsys, tmp_path):
    """Through main: the error is about the missing bundle, not 'expected one argument'."""
    code = main(["inspect", "voco", "--model", str(tmp_path / "none"), "--input", str(tmp_path / "x.nii"),
                 "--box", "-10,-20.5,-30", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "expected one argument" not in err, err


@pytest.mark.parametrize("argv, hint", [(["finetunee"], "did you mean 'finetune'?"), (["inspect", "vcoo"], "did you mean 'voco'?"),
                                        (["segmnt", "--model", "m"], "did you mean 'segment'?")])
def test_a_mistyped_command_gets_did_you_mean(capsys, argv, hint):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and hint in err[0], err


def test_finetune_refuses_a_pretext_preset(tmp_path, capsys):
    assert main(["finetune", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--preset", "voco-v1-cpu"]) == 2
    message = _one_error_line(capsys)
    assert "--preset voco-v1-cpu is a 'voco' preset" in message and "--init" in message and "seg-cpu" in message
    assert not (tmp_path / "run").exists()
    assert main(["finetune", "--task", "interactive", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--preset", "seg-cpu"]) == 2
    assert "takes interactive-cpu" in _one_error_line(capsys)
