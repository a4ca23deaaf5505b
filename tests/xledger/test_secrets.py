"""R5: a token file the process cannot read is its own error, apart from a missing one: it
names the file, its mode and owner, never the token (a Kubernetes secret mounted for
root, read by the worker's user, once sent operators to make a new token)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from worker.xledger.secrets import MissingToken, SecretStore, UnreadableToken

TOKEN = "tok-abcdef-123456-never-shown"


def test_a_missing_token_file_is_missing(tmp_path: Path) -> None:
    with pytest.raises(MissingToken) as caught:
        SecretStore({}, token_dir=tmp_path).token("t-fjordby")
    assert not isinstance(caught.value, UnreadableToken)
    assert "no Xledger token for token_ref 't-fjordby'" in str(caught.value)


def test_a_token_that_is_not_a_file_is_unreadable_not_missing(tmp_path: Path) -> None:
    (tmp_path / "t-fjordby").mkdir()  # e.g. a projected volume's folder where a key was meant
    with pytest.raises(UnreadableToken, match=r"t-fjordby.*not a regular file"):
        SecretStore({}, token_dir=tmp_path).token("t-fjordby")


_CHILD = """
import json, sys
from pathlib import Path
from worker.xledger.secrets import SecretStore, UnreadableToken
try:
    SecretStore({}, token_dir=Path(sys.argv[1])).token("t-fjordby")
except UnreadableToken as exc:
    print(json.dumps({"error": "UnreadableToken", "message": str(exc)}))
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
"""


def test_a_token_file_of_mode_000_is_unreadable_named_with_its_mode_never_its_value(
    tmp_path: Path,
) -> None:
    """Read by a process without the right to. Root reads any file whatever its mode (the
    capability CAP_DAC_OVERRIDE): where the tests run as root, the reader is a child
    process with that capability (and CAP_DAC_READ_SEARCH) taken away by `setpriv`."""
    folder = tmp_path / "tokens"
    folder.mkdir()
    token = folder / "t-fjordby"
    token.write_text(TOKEN)
    token.chmod(0o000)
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "as root this test needs setpriv (util-linux) to give up DAC override"
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    proc = subprocess.run(
        [*prefix, sys.executable, "-c", _CHILD, str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["error"] == "UnreadableToken", got
    assert str(token) in got["message"] and "mode 0000" in got["message"]
    assert "Permission denied" in got["message"] and "fsGroup" in got["message"]
    assert TOKEN not in proc.stdout + proc.stderr
