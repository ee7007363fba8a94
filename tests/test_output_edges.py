"""-o edges (issue 25, item 5): a long but valid file name, a signal at any instant of the write
(the window inside the temporary file's creation included), and -o naming the streams.

The truths are the file system's: what the folder holds after the command, byte for byte."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

POSIX = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals and file names")
NAME_MAX = 255


def _name_max(folder) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return NAME_MAX


@pytest.mark.parametrize("length", [200, 250, 255])
def test_a_long_but_valid_file_name_is_written(cli, tmp_path, length):
    if length > _name_max(tmp_path):
        pytest.skip("this file system's names are shorter")
    stem = "n" * (length - len(".json"))
    target = tmp_path / f"{stem}.json"
    assert len(os.fsencode(target.name)) == length
    expected = cli("summary", "--format", "json").stdout
    result = cli("summary", "--format", "json", "-o", target)
    assert result.stdout == ""
    assert target.read_bytes() == expected.encode("utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temporary file left


def test_a_long_name_of_multibyte_characters_is_written(cli, tmp_path):
    # 84 characters of 3 bytes each: 252 bytes plus ".md" is NAME_MAX; a temporary name with a
    # prefix of the name cut by characters, not bytes, must still fit.
    target = tmp_path / ("\u4e2d" * 84 + ".md")
    assert len(os.fsencode(target.name)) == 255
    if 255 > _name_max(tmp_path):
        pytest.skip("this file system's names are shorter")
    expected = cli("summary", "--format", "markdown").stdout
    cli("summary", "--format", "markdown", "-o", target)
    assert target.read_bytes() == expected.encode("utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_a_name_over_name_max_is_one_line_exit_2(cli, tmp_path):
    target = tmp_path / ("n" * 300 + ".json")
    result = cli("summary", "-o", target, code=2)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "cannot be written" in result.stderr
    assert list(tmp_path.iterdir()) == []


# The real CLI (its console-script entry point) in a process of its own, with os.open hooked:
# right after the real os.open creates a file in the target's folder that is not the target (the
# temporary file), the signal is sent to the process itself. Python runs its handler at the next
# instruction, inside the hook: inside the temporary file's creation, before the caller holds
# the descriptor or (with tempfile.mkstemp) the name.
_SIGNAL_AS_THE_TEMPORARY_FILE_APPEARS = """
import os, signal, sys
signum = getattr(signal, sys.argv[1])
target = os.path.abspath(sys.argv[2])
folder = os.path.dirname(target)
real_open = os.open
def hooked(path, flags, *args, **kwargs):
    fd = real_open(path, flags, *args, **kwargs)
    name = os.path.abspath(os.fsdecode(path))
    if flags & os.O_CREAT and os.path.dirname(name) == folder and name != target:
        os.write(2, b"created\\n")  # fd 1 is stderr while a command runs
        os.kill(os.getpid(), signum)
    return fd
os.open = hooked
sys.argv = ["resnet-trace", "summary", "--base-dim", "4", "--format", "json", "-o", target]
from resnet_trace.cli import main
main()
os.write(1, b"survived\\n")
"""


def _signal_in_the_window(tmp_path, name: str, target):
    return subprocess.run(
        [sys.executable, "-c", _SIGNAL_AS_THE_TEMPORARY_FILE_APPEARS, name, str(target)],
        capture_output=True,
        text=True,
        timeout=180,
        # A test runner may start us with SIGINT ignored; the CLI keeps an ignored signal ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@POSIX
@pytest.mark.parametrize("existing", [True, False], ids=["replacing", "new"])
def test_sigterm_as_the_temporary_file_is_created_leaves_nothing(tmp_path, existing):
    target = tmp_path / "out.json"
    if existing:
        target.write_text("old")
    proc = _signal_in_the_window(tmp_path, "SIGTERM", target)
    assert proc.stdout == "" and proc.stderr == "created\n"  # the window was hit; nothing after it
    assert proc.returncode == -signal.SIGTERM, proc.stderr  # it died of the signal, as asked
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out.json"] if existing else [])
    if existing:
        assert target.read_text() == "old"


@POSIX
@pytest.mark.parametrize("existing", [True, False], ids=["replacing", "new"])
def test_sigint_as_the_temporary_file_is_created_leaves_nothing(tmp_path, existing):
    target = tmp_path / "out.json"
    if existing:
        target.write_text("old")
    proc = _signal_in_the_window(tmp_path, "SIGINT", target)
    assert proc.returncode == 130, proc.stderr  # docs/cli.md: 130 interrupted
    assert proc.stdout == "" and proc.stderr == "created\nresnet-trace: interrupted\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out.json"] if existing else [])
    if existing:
        assert target.read_text() == "old"


# A second signal while the first one's cleanup runs: the file is still removed.
_TWO_SIGNALS = """
import os, signal, sys
from pathlib import Path
target = os.path.abspath(sys.argv[1])
folder = os.path.dirname(target)
real_open, real_unlink = os.open, os.unlink
def hooked(path, flags, *args, **kwargs):
    fd = real_open(path, flags, *args, **kwargs)
    name = os.path.abspath(os.fsdecode(path))
    if flags & os.O_CREAT and os.path.dirname(name) == folder and name != target:
        os.kill(os.getpid(), signal.SIGINT)
    return fd
def unlink(path, *args, **kwargs):
    os.unlink = real_unlink
    os.kill(os.getpid(), signal.SIGTERM)  # lands as the cleanup starts
    return real_unlink(path, *args, **kwargs)
os.open = hooked
os.unlink = unlink
from resnet_trace.atomic import write_atomically
write_atomically(Path(target), lambda fh: fh.write(b"x" * 1000))
print("survived")
"""


@POSIX
def test_a_second_signal_during_the_cleanup_still_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    proc = subprocess.run(
        [sys.executable, "-c", _TWO_SIGNALS, str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert "survived" not in proc.stdout
    assert proc.returncode == -signal.SIGTERM, proc.stderr  # the second signal ends it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    assert target.read_bytes() == b"old"


def test_o_dev_stdout_and_stderr_write_the_streams(cli):
    expected = cli("summary", "--format", "csv").stdout
    to_stdout = cli("summary", "--format", "csv", "-o", "/dev/stdout")
    assert to_stdout.stdout == expected
    to_stderr = cli("summary", "--format", "csv", "-o", "/dev/stderr")
    assert to_stderr.stdout == "" and to_stderr.stderr == expected
