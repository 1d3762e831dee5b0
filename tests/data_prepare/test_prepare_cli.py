"""The command line: clear errors, the worker pool, resuming, the shared report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lit_diffsr.data.prepare import DATASETS, REPORT_NAME, main


def test_unknown_dataset_lists_the_known_ones(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["imagenet1k", "--src", ".", "--dst", "out"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "invalid choice: 'imagenet1k'" in error
    assert all(f"'{name}'" in error for name in DATASETS)


def test_missing_src_argument(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["ffhq", "--dst", "out"])
    assert exit_info.value.code == 2 and "required: --src" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("src", "dst", "message"),
    [
        ("absent", "dst", "--src {tmp}/absent does not exist"),
        ("src", "src/prepared", "--dst {tmp}/src/prepared is inside --src {tmp}/src"),
        ("src", "src", "--dst {tmp}/src is inside --src"),
        ("src", "..", "--src {tmp}/src is inside --dst {tmp}/.."),
        ("empty", "dst", "found no ffhq images under --src {tmp}/empty"),
    ],
)
def test_location_errors(tmp_path, capsys, src, dst, message) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "src" / "a.png").write_bytes(b"")
    status = main(["ffhq", "--src", str(tmp_path / src), "--dst", str(tmp_path / dst)])
    assert status == 2 and message.format(tmp=tmp_path) in capsys.readouterr().err
    assert not (tmp_path / dst / REPORT_NAME).exists()


@pytest.mark.parametrize(
    ("expect", "message"),
    [
        ("many", "use N, LOW-HIGH"),
        ("5-", "use N, LOW-HIGH"),
        ("9-3", "LOW <= HIGH"),
        ("trian=5", "unknown key 'trian'"),
    ],
)
def test_bad_expect_values(source, prepare, capsys, expect, message) -> None:
    source.image("train/cat/0001.png", 32, 32)
    status, _ = prepare("cifar10", "--expect", expect)
    assert status == 2 and message in capsys.readouterr().err


def test_worker_pool_through_python_m_gives_the_same_files(source, snapshot, tmp_path) -> None:
    for index in range(6):
        source.image(f"faces/{index:05d}.png", 96, 96, gray=index == 3)
    source.corrupt("faces/00006.png")
    args = ["ffhq", "--src", str(source.root), "--resolutions", "16", "32", "--expect", "6"]
    assert main([*args, "--dst", str(tmp_path / "serial"), "--workers", "1"]) == 1
    command = [
        sys.executable,
        "-m",
        "lit_diffsr.data.prepare",
        *args,
        "--dst",
        str(tmp_path / "pool"),
        "--workers",
        "2",
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert completed.returncode == 1, completed.stderr  # 1: the corrupt file is reported
    serial, pool = snapshot(tmp_path / "serial"), snapshot(tmp_path / "pool")
    for tree in (serial, pool):
        del tree[REPORT_NAME]
    assert {name: digest for name, (digest, _) in serial.items()} == {
        name: digest for name, (digest, _) in pool.items()
    }
    report = json.loads((tmp_path / "pool" / REPORT_NAME).read_text())["ffhq"]
    assert report["files_written"] == 12 and len(report["failed_sources"]) == 1


def test_interrupted_run_resumes(source, prepare, tmp_path) -> None:
    for index in range(3):
        source.image(f"{index}.png", 64, 64)
    prepare("celebahq", "--resolutions", "16", "--expect", "3")
    (tmp_path / "dst/16/1.png").unlink()  # as if the run had been killed before writing it ...
    (tmp_path / "dst/16/.1.png.4242.tmp").write_bytes(b"half a png")  # ... while a temp file was open
    status, report = prepare("celebahq", "--resolutions", "16", "--expect", "3")
    assert (report["files_written"], report["files_skipped"]) == (1, 2)
    assert status == 0 and report["counts"][0]["files"] == 3  # hidden temporaries are never counted


def test_report_keeps_each_dataset(source, prepare, tmp_path) -> None:
    source.image("Set5/HR/baby.png", 40, 40)
    source.image("Set14/HR/comic.png", 40, 40)
    prepare("srtest", "--sets", "Set5", "--scales", "2", "--expect", "1")
    prepare("celebahq", "--resolutions", "8", "--expect", "2")
    report = json.loads((tmp_path / "dst" / REPORT_NAME).read_text())
    assert set(report) == {"srtest", "celebahq"}
    assert report["srtest"]["options"]["sets"] == ["Set5"] and report["celebahq"]["files_written"] == 2
