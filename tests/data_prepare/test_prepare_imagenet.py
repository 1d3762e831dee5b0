"""ImageNet: class-folder trees at several resolutions, val labels from each supported label file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from lit_diffsr.data.prepare.resize import resize_square

WNIDS = ["n01440764", "n01443537"]  # ILSVRC2012_ID 449 and 450 in the devkit (any ids would do)
VAL_WNIDS = [WNIDS[1], WNIDS[0], WNIDS[0], WNIDS[1]]  # label of ILSVRC2012_val_0000000{1..4}


def build_train(source, root: str) -> None:
    """Class 0: three colour JPEGs of different shapes and a grayscale one; class 1: two and a corrupt one."""
    for index, (width, height) in enumerate([(50, 40), (30, 44), (64, 64)]):
        source.image(f"{root}/train/{WNIDS[0]}/{WNIDS[0]}_{index}.JPEG", width, height)
    source.image(f"{root}/train/{WNIDS[0]}/{WNIDS[0]}_gray.JPEG", 40, 36, gray=True)
    for index in range(2):
        source.image(f"{root}/train/{WNIDS[1]}/{WNIDS[1]}_{index}.JPEG", 48, 40)
    source.corrupt(f"{root}/train/{WNIDS[1]}/{WNIDS[1]}_broken.JPEG")


def build_flat_val(source, root: str) -> None:
    for number in range(1, 6):  # number 5 has no label: it must be reported, not guessed
        source.image(f"{root}/val/ILSVRC2012_val_{number:08d}.JPEG", 42, 38)


@pytest.fixture
def kaggle_tree(source):
    """The Kaggle copy: ILSVRC/Data/CLS-LOC/{train,val} and LOC_val_solution.csv at the top."""
    build_train(source, "ILSVRC/Data/CLS-LOC")
    build_flat_val(source, "ILSVRC/Data/CLS-LOC")
    rows = [f"ILSVRC2012_val_{n:08d},{wnid} 1 2 30 40 {wnid} 5 6 7 8" for n, wnid in enumerate(VAL_WNIDS, 1)]
    (source.root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    return source


@pytest.fixture
def devkit_tree(source):
    """The official tars: train/<wnid>/, flat val/ and the devkit's ground truth + meta.mat."""
    build_train(source, ".")
    build_flat_val(source, ".")
    data = source.root / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    ids = {WNIDS[0]: 449, WNIDS[1]: 450}
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{ids[w]}\n" for w in VAL_WNIDS))
    synsets = np.array(
        [(450, WNIDS[1], "goldfish"), (449, WNIDS[0], "tench"), (1001, "n00000001", "not a leaf")],
        dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O")],
    )
    savemat(data / "meta.mat", {"synsets": synsets})
    return source


def test_layout_sizes_labels_and_report(kaggle_tree, prepare, pixels, tmp_path) -> None:
    status, report = prepare("imagenet", "--resolutions", "8", "16", "--expect", "train=2-4", "val=2")
    dst = tmp_path / "dst"
    for res in (8, 16):
        found = sorted(str(p.relative_to(dst / str(res))) for p in (dst / str(res)).rglob("*.png"))
        assert found == sorted(
            [f"train/{WNIDS[0]}/{WNIDS[0]}_{i}.png" for i in (0, 1, 2, "gray")]
            + [f"train/{WNIDS[1]}/{WNIDS[1]}_{i}.png" for i in (0, 1)]
            + [f"val/{wnid}/ILSVRC2012_val_{n:08d}.png" for n, wnid in enumerate(VAL_WNIDS, 1)]
        )
        for path in (dst / str(res)).rglob("*.png"):
            assert pixels(path).shape == (res, res, 3)
    # The output is exactly the chosen resize of the decoded source.
    with Image.open(kaggle_tree.root / f"ILSVRC/Data/CLS-LOC/train/{WNIDS[0]}/{WNIDS[0]}_1.JPEG") as source:
        expected = np.asarray(resize_square(source.convert("RGB"), 16))
    np.testing.assert_array_equal(pixels(dst / f"16/train/{WNIDS[0]}/{WNIDS[0]}_1.png"), expected)
    gray = pixels(dst / f"16/train/{WNIDS[0]}/{WNIDS[0]}_gray.png")
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    # The corrupt and the unlabelled source are reported; the counts (overridden) pass.
    failed = {entry["source"].rsplit("/", 1)[-1]: entry["reason"] for entry in report["failed_sources"]}
    assert set(failed) == {f"{WNIDS[1]}_broken.JPEG", "ILSVRC2012_val_00000005.JPEG"}
    assert "truncated" in failed[f"{WNIDS[1]}_broken.JPEG"].lower()
    assert report["mismatches"] == [] and all(count["ok"] for count in report["counts"])
    assert report["files_written"] == 2 * 10 and status == 1  # unusable sources make the exit status 1


def test_full_imagenet_counts_are_the_default_expectation(kaggle_tree, prepare) -> None:
    status, report = prepare("imagenet", "--resolutions", "8", "--splits", "train", "--report-only")
    assert status == 0  # --report-only: problems are reported, the exit status stays 0
    train = report["mismatches"]
    assert "2 class folders, expected 1000" in train[1] and "6 files in all, expected 1281167" in train[0]
    assert any(line.endswith(f"{WNIDS[1]}: 2 files, expected 732 to 1300") for line in train)


def test_devkit_ground_truth_with_meta_mat(devkit_tree, prepare, tmp_path) -> None:
    status, report = prepare("imagenet", "--resolutions", "8", "--splits", "val", "--expect", "2")
    assert status == 1 and [f["source"][-28:] for f in report["failed_sources"]] == [
        "ILSVRC2012_val_00000005.JPEG"
    ]
    labelled = sorted(
        str(p.relative_to(tmp_path / "dst/8/val")) for p in (tmp_path / "dst/8/val").rglob("*.png")
    )
    assert labelled == sorted(f"{wnid}/ILSVRC2012_val_{n:08d}.png" for n, wnid in enumerate(VAL_WNIDS, 1))


def test_synset_text_lists(devkit_tree, prepare, tmp_path, capsys) -> None:
    ids_in_order = devkit_tree.root / "synsets_by_id.txt"  # line k = wnid of ILSVRC2012_ID k
    ids_in_order.write_text("".join(f"n{k:08d}\n" for k in range(1, 449)) + f"{WNIDS[0]}\n{WNIDS[1]}\n")
    status, _ = prepare("imagenet", "--resolutions", "8", "--splits", "val", "--synsets", str(ids_in_order))
    assert sorted(p.name for p in (tmp_path / "dst/8/val").iterdir()) == WNIDS
    # A 1000-line sorted list is the Kaggle/torchvision order: refused, since it would mislabel val.
    sorted_list = devkit_tree.root / "LOC_synset_mapping.txt"
    sorted_list.write_text("".join(f"n{k:08d} name\n" for k in range(1000)))
    status, _ = prepare("imagenet", "--splits", "val", "--synsets", str(sorted_list))
    assert status == 2 and "ILSVRC2012_ID order" in capsys.readouterr().err


def test_flat_folders_without_labels_are_clear_errors(source, prepare, capsys) -> None:
    build_flat_val(source, ".")
    status, report = prepare("imagenet", "--splits", "val")
    assert status == 2 and report is None
    assert "pass --val-labels" in capsys.readouterr().err
    source.image("train/n01440764.tar", 8, 8)  # per-class tars not unpacked
    status, _ = prepare("imagenet", "--splits", "train")
    assert status == 2 and "unpack each <wnid>.tar" in capsys.readouterr().err


def test_second_run_does_no_work_and_sources_stay_untouched(kaggle_tree, prepare, snapshot, tmp_path) -> None:
    source_before = snapshot(kaggle_tree.root)
    args = ("--resolutions", "8", "--expect", "2-4")
    prepare("imagenet", *args)
    outputs = snapshot(tmp_path / "dst")
    status, report = prepare("imagenet", *args)
    assert report["files_written"] == 0 and report["files_skipped"] == 10
    after = snapshot(tmp_path / "dst")
    del outputs["prepare_report.json"], after["prepare_report.json"]
    assert after == outputs  # same bytes, same modification times: nothing was rewritten
    assert snapshot(kaggle_tree.root) == source_before
