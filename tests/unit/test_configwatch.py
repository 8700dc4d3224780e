"""masqd.engine.configwatch: a change is noticed by the file's identity, content already seen is
never parsed again, a rejected content is reported as new once and retried when it changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from masqd.core import config
from masqd.core.config import ParseOptions
from masqd.core.errors import ConfigError
from masqd.core.merge import FileState
from masqd.engine import configwatch
from masqd.engine.configwatch import ConfigWatcher, DirectoryWatcher, Loaded, Rejected
from masqd.host import configfile
from tests.support.scenario import project

GOOD = b"nonMasqueradeCIDRs: [10.0.0.0/8]\n"
OTHER = b"nonMasqueradeCIDRs: [10.0.0.0/8, 192.168.0.0/16]\n"
BAD = b"masqOutBound: maybe\n"


class FakeFile:
    """The file's content and identity, as the watcher's injected read and identity see them."""

    def __init__(self, data: bytes | None) -> None:
        self.data: bytes | None = data
        self.error: str = ""
        self.version = 0

    def write(self, data: bytes | None) -> None:
        self.data, self.error = data, ""
        self.version += 1

    def read(self, path: str) -> bytes | None:
        if self.error:
            raise ConfigError(self.error)
        return self.data

    def identity(self, path: str) -> object:
        return (self.version, self.error)


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every content the watcher parses."""
    seen: list[bytes] = []
    real = config.parse_config

    def counting(text: str | bytes, options: ParseOptions | None = None) -> config.LoadedConfig:
        seen.append(text if isinstance(text, bytes) else text.encode())
        return real(text, options)

    monkeypatch.setattr(configwatch, "parse_config", counting)
    return seen


def watcher(file: FakeFile) -> ConfigWatcher:
    return ConfigWatcher("/cfg", ParseOptions(), read=file.read, identity=file.identity)


def test_first_load_parses_and_the_same_content_is_not_parsed_again(parses: list[bytes]) -> None:
    file = FakeFile(GOOD)
    w = watcher(file)
    assert w.changed()
    first = w.load()
    assert isinstance(first, Loaded) and not first.missing
    assert not w.changed()
    file.write(GOOD)  # rewritten with the same bytes: a new identity
    assert w.changed()
    assert w.load() is None
    assert parses == [GOOD]


def test_changed_content_is_parsed_once(parses: list[bytes]) -> None:
    file = FakeFile(GOOD)
    w = watcher(file)
    w.load()
    file.write(OTHER)
    loaded = w.load()
    assert isinstance(loaded, Loaded)
    assert len(loaded.loaded.config.non_masquerade_cidrs) == 2
    assert w.load() is None
    assert parses == [GOOD, OTHER]


def test_a_missing_file_is_all_defaults() -> None:
    loaded = watcher(FakeFile(None)).load()
    assert isinstance(loaded, Loaded) and loaded.missing and loaded.loaded.using_defaults


def test_rejected_content_is_new_once_and_not_parsed_again(parses: list[bytes]) -> None:
    file = FakeFile(BAD)
    w = watcher(file)
    first = w.load()
    assert isinstance(first, Rejected) and first.new and "masqOutBound" in first.error
    again = w.load()
    assert isinstance(again, Rejected) and not again.new and again.error == first.error
    assert parses == [BAD]


def test_a_fixed_file_after_a_rejected_one_is_taken(parses: list[bytes]) -> None:
    """Bad, then the good content back again: loaded (the caller clears its error)."""
    file = FakeFile(GOOD)
    w = watcher(file)
    w.load()
    file.write(BAD)
    assert isinstance(w.load(), Rejected)
    file.write(GOOD)
    assert isinstance(w.load(), Loaded)
    file.write(BAD)
    bad_again = w.load()
    assert isinstance(bad_again, Rejected) and bad_again.new


def test_an_unreadable_file_is_rejected_with_the_reason_and_retried_when_it_changes() -> None:
    file = FakeFile(GOOD)
    w = watcher(file)
    w.load()
    file.error = "cannot read /cfg: Permission denied"
    assert w.changed()
    rejected = w.load()
    assert isinstance(rejected, Rejected) and rejected.new and "Permission denied" in rejected.error
    repeated = w.load()
    assert isinstance(repeated, Rejected) and not repeated.new
    file.write(OTHER)
    assert isinstance(w.load(), Loaded)


# -- a config directory (--config-dir) -------------------------------------------------------


def dir_watcher(root: Path) -> DirectoryWatcher:
    return DirectoryWatcher(str(root), ParseOptions())


def test_a_directory_merges_its_ip_masq_files_and_ignores_the_rest(tmp_path: Path) -> None:
    (tmp_path / "ip-masq-b").write_text("masqueradeCIDRs: [192.0.2.2/32]\n")
    (tmp_path / "ip-masq-a").write_text("masqueradeCIDRs: [192.0.2.1/32]\n")
    (tmp_path / "other").write_text("masqOutBound: maybe\n")
    (tmp_path / "ip-masq-dir").mkdir()
    w = dir_watcher(tmp_path)
    loaded = w.load()
    assert isinstance(loaded, Loaded)
    assert [str(c) for c in loaded.loaded.config.masquerade_cidrs] == [
        "192.0.2.1/32",
        "192.0.2.2/32",
    ]
    assert [f.name for f in loaded.files] == ["ip-masq-a", "ip-masq-b"]
    assert not w.changed() and w.load() is None


def test_a_bad_file_keeps_its_last_good_content_and_is_reported_once(tmp_path: Path) -> None:
    (tmp_path / "ip-masq-a").write_text("masqueradeCIDRs: [192.0.2.1/32]\n")
    (tmp_path / "ip-masq-b").write_text("masqueradeCIDRs: [192.0.2.2/32]\n")
    w = dir_watcher(tmp_path)
    w.load()
    (tmp_path / "ip-masq-b").write_text("masqOutBound: maybe\n")
    (tmp_path / "ip-masq-a").write_text("masqueradeCIDRs: [192.0.2.9/32]\n")
    loaded = w.load()
    assert isinstance(loaded, Loaded)
    assert [str(c) for c in loaded.loaded.config.masquerade_cidrs] == [
        "192.0.2.9/32",
        "192.0.2.2/32",
    ]
    assert [(f.name, f.state) for f in loaded.refused] == [("ip-masq-b", FileState.KEPT)]
    (tmp_path / "ip-masq-a").write_text("masqueradeCIDRs: [192.0.2.8/32]\n")
    again = w.load()
    assert isinstance(again, Loaded) and again.refused == ()  # the same refusal, not again
    assert again.files[1].state == FileState.KEPT


def test_files_appearing_and_disappearing_are_seen(tmp_path: Path) -> None:
    w = dir_watcher(tmp_path)
    first = w.load()
    assert isinstance(first, Loaded) and first.missing and first.loaded.using_defaults
    (tmp_path / "ip-masq-a").write_text("masqOutBound: true\n")
    assert w.changed()
    second = w.load()
    assert isinstance(second, Loaded) and second.loaded.config.masq_out_bound is True
    (tmp_path / "ip-masq-a").unlink()
    assert w.changed()
    third = w.load()
    assert isinstance(third, Loaded) and third.loaded.config.masq_out_bound is False


def test_the_kubelets_data_swap_is_seen(tmp_path: Path) -> None:
    project(tmp_path, {"ip-masq-a": "masqOutBound: true\n"}, 1)
    w = dir_watcher(tmp_path)
    first = w.load()
    assert isinstance(first, Loaded) and first.loaded.config.masq_out_bound is True
    project(tmp_path, {"ip-masq-a": "masqOutBound: false\n", "ip-masq-b": "cidrLimit: 9\n"}, 2)
    assert w.changed()
    second = w.load()
    assert isinstance(second, Loaded)
    assert second.loaded.config.masq_out_bound is False and second.loaded.config.cidr_limit == 9


def test_a_directory_of_bad_files_only_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "ip-masq-a").write_text("masqOutBound: maybe\n")
    rejected = dir_watcher(tmp_path).load()
    assert isinstance(rejected, Rejected) and rejected.new
    assert rejected.error.startswith("ip-masq-a: masqOutBound: must be true or false")


def test_a_directory_that_cannot_be_listed_is_rejected_until_it_can(tmp_path: Path) -> None:
    (tmp_path / "ip-masq-a").write_text("masqOutBound: true\n")
    broken = {"on": False}

    def list_files(path: str, prefix: str) -> list[str] | None:
        if broken["on"]:
            raise ConfigError(f"cannot list {path}: Permission denied")
        return configfile.config_files(path, prefix)

    w = DirectoryWatcher(str(tmp_path), ParseOptions(), list_files=list_files)
    assert isinstance(w.load(), Loaded)
    broken["on"] = True
    rejected = w.load()
    assert isinstance(rejected, Rejected) and "Permission denied" in rejected.error
    broken["on"] = False
    again = w.load()
    assert isinstance(again, Loaded) and again.loaded.config.masq_out_bound is True
