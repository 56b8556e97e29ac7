"""Issue 9, point 6: the bottom layer's one atomic-write helper and one settings module (vinted_tagger/)."""

from __future__ import annotations

import json
from importlib import metadata

import pytest

import vinted_tagger
from vinted_tagger.errors import UserError
from vinted_tagger.files import atomic_path, write_json
from service.settings import Settings as ServiceSettings  # the service's settings, on this layer's machinery
from vinted_tagger.settings import Paths, SettingsError, encoder_home, worker_environment


class Interrupted(Exception):
    pass


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path) -> None:
    target = tmp_path / "record.json"
    write_json(target, {"b": 1, "a": 2})
    assert target.read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'  # sorted, indented: the format caches keep
    with pytest.raises(Interrupted), atomic_path(target) as temp:
        temp.write_text("half of a new")
        raise Interrupted
    assert json.loads(target.read_text()) == {"a": 2, "b": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_settings_come_from_the_environment_blank_means_unset(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("VINTED_TAGGER_MAX_FILES", "4")
    monkeypatch.setenv("VINTED_TAGGER_MAX_BATCH", " ")
    monkeypatch.setenv("VINTED_TAGGER_HOME", str(tmp_path))
    monkeypatch.setenv("VINTED_TAGGER_MODEL", "")
    settings = ServiceSettings()
    assert (settings.max_files, settings.max_batch) == (4, 0)
    assert ServiceSettings(max_files=8).max_files == 8  # keyword arguments win over the environment
    assert encoder_home() == tmp_path and Paths().model is None
    assert worker_environment()["VINTED_TAGGER_HOME"] == str(tmp_path)


def test_a_bad_value_is_one_line_naming_the_variable() -> None:
    with pytest.raises(SettingsError) as error:
        ServiceSettings.from_env({"VINTED_TAGGER_DECODE_THREADS": "2.5"})
    assert str(error.value) == "VINTED_TAGGER_DECODE_THREADS='2.5' is not a valid int"
    assert isinstance(error.value, UserError) and isinstance(error.value, ValueError)
    with pytest.raises(SettingsError, match="^settings out of range: Settings"):
        ServiceSettings(max_request_mb=1, max_file_mb=2)


def test_the_version_is_the_installed_package_metadata() -> None:
    try:
        expected = metadata.version("vinted-tagger")
    except metadata.PackageNotFoundError:
        expected = "0+unknown"
    assert vinted_tagger.__version__ == expected
