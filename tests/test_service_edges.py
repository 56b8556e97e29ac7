"""The service's edges: `vinted-serve` without the serve extra gives the one-line install hint (package import
needs no FastAPI), and a busy port is one line and exit 2 before any model loads."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVE_EXTRA = ("fastapi", "starlette", "uvicorn", "fastapi_offline", "prometheus_client", "python_multipart",
               "multipart")


def without_serve_extra(folder: Path) -> Path:
    """A venv that sees this environment's packages except the serve extra's: symlinks to every top-level
    entry of site-packages but those, named by a .pth line (nothing is copied or downloaded)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder / "venv")], check=True, timeout=120)
    packages = folder / "packages"
    packages.mkdir()
    for entry in Path(sysconfig.get_path("purelib")).iterdir():
        name = entry.name.split("-")[0].split(".")[0].lower()
        if name not in SERVE_EXTRA and not entry.name.endswith(".pth"):
            (packages / entry.name).symlink_to(entry)
    python = folder / "venv" / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "borrowed.pth").write_text(f"{packages}\n")
    return python


def test_serve_without_the_extra_prints_the_install_hint(tmp_path) -> None:
    python = without_serve_extra(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    missing = subprocess.run([str(python), "-c", "import fastapi"], env=env, capture_output=True, text=True)
    assert missing.returncode != 0  # the venv really lacks FastAPI
    done = subprocess.run([str(python), "-c", "import service, sys; from service.__main__ import main; "
                           "sys.exit(main(['--port', '0']))"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "pip install 'vinted-tagger[serve]'" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_busy_port_is_one_line_before_the_model_loads(monkeypatch, capsys) -> None:
    pytest.importorskip("fastapi", reason="pip install 'vinted-tagger[serve]'")
    from classifiers.predict import Tagger
    from service.__main__ import main

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the port was checked")

    monkeypatch.setattr(Tagger, "load", never)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is already in use" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
