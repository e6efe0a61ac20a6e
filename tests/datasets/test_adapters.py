"""Adapters against tiny fixture trees in each official layout, with hand-counted expectations."""

import json

import pytest
from click.testing import CliRunner

from tests.conftest import touch
from vidpipe.cli.main import cli
from vidpipe.errors import VidpipeError
from vidpipe.datasets import cards
from vidpipe.datasets.adapters import build_manifest
from vidpipe.datasets.manifest import hash_fraction
from vidpipe.datasets.manifest import Manifest


def _counts(m):
    return {s: sum(c.values()) for s, c in m.counts().items()}


# ---------------------------------------------------------------- HMDB51
@pytest.fixture
def hmdb_root(tmp_path):
    root = tmp_path / "hmdb51"
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    names = {
        "brush_hair": ["April_09_brush_hair_u_nm_np1_ba_goo_0.avi", "Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_1.avi",
                       "brushing_hair_2_brush_hair_h_nm_np1_le_goo_0.avi", "Brushing_my_waist_lenth_hair_brush_hair_u_nm_np1_ba_goo_2.avi"],
        "cartwheel": ["Bodenturnen_2004_cartwheel_f_cm_np1_le_med_0.avi", "Cartwheel_Tutorial_cartwheel_f_cm_np1_fr_med_3.avi",
                      "park_cartwheel_f_cm_np1_ri_med_1.avi"],
    }
    for cls, vids in names.items():
        for v in vids:
            touch(root / cls / v)
    # split 1: brush_hair 2 train (one line with trailing spaces), 1 test, 1 unused; cartwheel: all train, no test
    (splits / "brush_hair_test_split1.txt").write_text(
        f"{names['brush_hair'][0]} 1 \n{names['brush_hair'][1]} 1  \n{names['brush_hair'][2]} 2 \n{names['brush_hair'][3]} 0 \n")
    (splits / "cartwheel_test_split1.txt").write_text(
        f"{names['cartwheel'][0]} 1\n{names['cartwheel'][1]} 1\n{names['cartwheel'][2]} 1\nmissing_video_cartwheel_f_cm_np1_le_med_9.avi 1\n")
    # split 2 differs
    (splits / "brush_hair_test_split2.txt").write_text(f"{names['brush_hair'][0]} 2 \n{names['brush_hair'][3]} 1 \n")
    (splits / "cartwheel_test_split2.txt").write_text(f"{names['cartwheel'][0]} 2\n")
    return root


def test_hmdb51_split1(hmdb_root):
    m = build_manifest("hmdb51", hmdb_root, split=1)
    assert m.classes == ["brush_hair", "cartwheel"]
    assert m.counts() == {"train": {"brush_hair": 2, "cartwheel": 3}, "test": {"brush_hair": 1, "cartwheel": 0}}
    assert [x["id"] for x in m.missing] == ["missing_video_cartwheel_f_cm_np1_le_med_9"]
    r = next(r for r in m.records if r.split == "test")
    assert (r.path, r.label, r.label_name) == ("brush_hair/brushing_hair_2_brush_hair_h_nm_np1_le_goo_0.avi", 0, "brush_hair")
    assert all(not r.id.endswith(".avi") for r in m.records)


def test_hmdb51_split2_and_bad_split(hmdb_root):
    m = build_manifest("hmdb51", hmdb_root, split=2)
    assert _counts(m) == {"train": 1, "test": 2}
    with pytest.raises(VidpipeError, match="split file|_test_split3"):
        build_manifest("hmdb51", hmdb_root, split=3)
    with pytest.raises(VidpipeError, match="official splits"):
        build_manifest("hmdb51", hmdb_root, split=4)


def test_hmdb51_missing_split_folder_names_it(tmp_path):
    touch(tmp_path / "brush_hair" / "a.avi")
    with pytest.raises(VidpipeError, match="testTrainMulti_7030_splits"):
        build_manifest("hmdb51", tmp_path)


def test_hmdb51_class_folder_without_split_file(hmdb_root):
    touch(hmdb_root / "chew" / "x_chew_u_nm_np1_fr_goo_0.avi")
    with pytest.raises(VidpipeError, match=r"\['chew'\]"):
        build_manifest("hmdb51", hmdb_root)


# ---------------------------------------------------------------- UCF101
@pytest.fixture
def ucf_root(tmp_path):
    root = tmp_path / "ucf"
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 HandstandPushups\n3 YoYo\n")
    vids = ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
            "HandstandPushups/v_HandStandPushups_g08_c01.avi", "HandstandPushups/v_HandStandPushups_g01_c02.avi",
            "YoYo/v_YoYo_g08_c03.avi"]
    for v in vids:
        touch(root / "UCF-101" / v)
    (lists / "trainlist01.txt").write_text(f"{vids[0]} 1\r\n{vids[2]} 2\r\n{vids[4]} 3\r\n")
    (lists / "testlist01.txt").write_text(f"{vids[1]}\r\n{vids[3]}\r\nYoYo/v_YoYo_g01_c01.avi\r\n")
    return root


def test_ucf101(ucf_root):
    m = build_manifest("ucf101", ucf_root, split=1)
    assert m.classes == ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]  # classInd order, 1-based -> 0-based
    assert m.counts() == {"train": {"ApplyEyeMakeup": 1, "HandstandPushups": 1, "YoYo": 1},
                          "test": {"ApplyEyeMakeup": 1, "HandstandPushups": 1, "YoYo": 0}}
    labels = {r.id: r.label for r in m.records}
    assert labels["v_HandStandPushups_g01_c02"] == 1 and labels["v_YoYo_g08_c03"] == 2
    assert m.missing == [{"id": "v_YoYo_g01_c01", "path": "UCF-101/YoYo/v_YoYo_g01_c01.avi", "split": "test"}]


def test_ucf101_missing_list_names_it(ucf_root):
    with pytest.raises(VidpipeError, match="trainlist02.txt"):
        build_manifest("ucf101", ucf_root, split=2)


# ---------------------------------------------------------------- Kinetics
K_CSV = "label,youtube_id,time_start,time_end,split,is_cc\n"


@pytest.mark.parametrize("nested", [False, True])
def test_kinetics400_flat_and_nested(tmp_path, nested):
    root = tmp_path / "k400"
    (root / "annotations").mkdir(parents=True)
    train = [("abseiling", "--07WQ2iBlw", 1, 11), ("air drumming", "-0mqMO-aCBw", 30, 40), ("abseiling", "0-NEkU5D1h4", 5, 15)]
    val = [("air drumming", "--33Lscn6sk", 4, 14), ("abseiling", "missingVID01", 0, 10)]
    (root / "annotations" / "train.csv").write_text(K_CSV + "".join(f"{a},{b},{c},{d},train,0\n" for a, b, c, d in train))
    (root / "annotations" / "validate.csv").write_text(K_CSV + "".join(f"{a},{b},{c},{d},val,0\n" for a, b, c, d in val))
    (root / "annotations" / "test.csv").write_text("youtube_id,time_start,time_end,split\nabcdefghijk,0,10,test\n")
    for split, rows in (("train", train), ("val", val[:1])):
        for label, yt, s, e in rows:
            sub = root / split / label if nested else root / "videos"
            touch(sub / f"{yt}_{s:06d}_{e:06d}.mp4")
    m = build_manifest("kinetics400", root)
    assert m.classes == ["abseiling", "air drumming"]
    assert _counts(m) == {"train": 3, "val": 1}  # the unlabelled test CSV is skipped
    assert [x["id"] for x in m.missing] == ["missingVID01_000000_000010"]
    assert {r.id for r in m.records} >= {"--07WQ2iBlw_000001_000011", "--33Lscn6sk_000004_000014"}
    assert cards.check_against_card(m, cards.load_card("kinetics400"))  # far from ~240k: warned


def test_kinetics_without_csv(tmp_path):
    with pytest.raises(VidpipeError, match="train.csv"):
        build_manifest("kinetics600", tmp_path)


# ---------------------------------------------------------------- Something-Something v2
def test_sthv2(tmp_path):
    root = tmp_path / "ssv2"
    labels = {"Approaching something with your camera": "0", "Putting something on a surface": "1",
              "Pushing something from left to right": "2"}
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "labels.json").write_text(json.dumps(labels))
    train = [{"id": "78687", "label": "putting a pen on a table", "template": "Putting [something] on a surface", "placeholders": ["a pen"]},
             {"id": "42326", "label": "pushing a cup from left to right", "template": "Pushing [something] from left to right", "placeholders": ["a cup"]}]
    val = [{"id": "74225", "label": "approaching a tv", "template": "Approaching [something] with your camera", "placeholders": ["a tv"]},
           {"id": "1", "label": "gone", "template": "Approaching [something] with your camera", "placeholders": ["x"]}]
    (root / "annotations" / "train.json").write_text(json.dumps(train))
    (root / "annotations" / "validation.json").write_text(json.dumps(val))
    for i in ("78687", "42326", "74225"):
        touch(root / "20bn-something-something-v2" / f"{i}.webm")
    m = build_manifest("sthv2", root)
    assert m.classes == list(labels)
    labels_by_id = {r.id: (r.label, r.split) for r in m.records}
    assert labels_by_id == {"78687": (1, "train"), "42326": (2, "train"), "74225": (0, "val")}
    assert [x["id"] for x in m.missing] == ["1"]


# ---------------------------------------------------------------- MSR DailyActivity3D
def test_msr_daily_activity3d_cross_subject(tmp_path):
    for a in (1, 16):
        for s in (1, 2, 3, 10):
            for e in (1, 2):
                touch(tmp_path / "rgb" / f"a{a:02d}_s{s:02d}_e{e:02d}_rgb.avi")
    touch(tmp_path / "rgb" / "a01_s01_e01_depth.bin")
    m = build_manifest("msr_daily_activity3d", tmp_path)
    assert len(m.classes) == 16
    assert m.counts()["train"]["drink"] == 4 and m.counts()["test"]["drink"] == 4  # s01,s03 vs s02,s10
    assert m.counts()["train"]["sit down"] == 4
    assert {r.split for r in m.records if "_s10_" in r.id} == {"test"}


# ---------------------------------------------------------------- folder
def test_folder_hash_split_is_deterministic(tmp_path):
    for c in ("jump", "run"):
        for i in range(30):
            touch(tmp_path / c / f"clip{i:02d}.mp4")
    touch(tmp_path / "run" / "notes.txt")
    m1 = build_manifest("folder", tmp_path, val_fraction=0.3)
    m2 = build_manifest("folder", tmp_path, val_fraction=0.3)
    assert m1.records == m2.records and len(m1.records) == 60
    # per class, the 9 (30% of 30) ids of smallest hash
    expected_val = {f"{c}/clip{i:02d}" for c in ("jump", "run")
                    for i in sorted(range(30), key=lambda i: hash_fraction(f"{c}/clip{i:02d}"))[:9]}
    assert {r.id for r in m1.records if r.split == "val"} == expected_val
    assert m1.classes == ["jump", "run"]


def test_folder_val_has_every_class_and_a_small_val_is_named(tmp_path):
    """3 classes x 6 clips, 20% val: one video of each class (a hash threshold gave one class none)."""
    for c in ("clap", "jump", "wave"):
        for i in range(6):
            touch(tmp_path / "videos" / c / f"v{i}.mp4")
    touch(tmp_path / "videos" / "solo" / "only.mp4")  # a class of one video keeps it for training
    m = build_manifest("folder", tmp_path / "videos")
    assert m.counts()["val"] == {"clap": 1, "jump": 1, "solo": 0, "wave": 1}
    assert m.counts()["train"] == {"clap": 5, "jump": 5, "solo": 1, "wave": 5}
    res = CliRunner().invoke(cli, ["manifest", "--dataset", "folder", "--root", str(tmp_path / "videos"), "-o", str(tmp_path / "m.jsonl")])
    assert res.exit_code == 0, res.output
    assert "val holds 3 videos" in res.output and "33.3 points" in res.output and "1 class has none" in res.output
    res = CliRunner().invoke(cli, ["extract", "--dataset", "synthetic", "--root", str(tmp_path / "videos"), "--val-fraction", "0.3",
                                   "--out", str(tmp_path / "s")])
    assert res.exit_code != 0 and "--val-fraction applies to folder" in res.output and "Traceback" not in res.output


def test_folder_explicit_splits_and_empty(tmp_path):
    touch(tmp_path / "train" / "a" / "1.mkv")
    touch(tmp_path / "test" / "b" / "2.mov")
    m = build_manifest("folder", tmp_path)
    assert {(r.split, r.label_name) for r in m.records} == {("train", "a"), ("test", "b")}
    with pytest.raises(VidpipeError, match="no videos"):
        build_manifest("folder", tmp_path / "train" / "a")


# ---------------------------------------------------------------- manifests and CLI
def test_manifest_roundtrip(hmdb_root, tmp_path):
    m = build_manifest("hmdb51", hmdb_root)
    m.write(tmp_path / "m.jsonl")
    back = Manifest.read(tmp_path / "m.jsonl")
    assert back.records == m.records and back.classes == m.classes and back.missing == m.missing
    with pytest.raises(VidpipeError, match="not a vidpipe manifest"):
        (tmp_path / "bad.jsonl").write_text('{"id": 1}\n')
        Manifest.read(tmp_path / "bad.jsonl")


def test_cli_manifest_prints_counts_and_card_warnings(hmdb_root, tmp_path):
    res = CliRunner().invoke(cli, ["manifest", "--dataset", "hmdb51", "--root", str(hmdb_root), "-o", str(tmp_path / "m.jsonl")])
    assert res.exit_code == 0, res.output
    assert "total" in res.output and "card expects 3570" in res.output and "missing" in res.output
    assert (tmp_path / "m.jsonl").is_file()


@pytest.mark.parametrize("args, message", [
    (["manifest", "--dataset", "hmdb51", "--root", "/nonexistent/hmdb", "-o", "x.jsonl"], "does not exist"),
    (["manifest", "--dataset", "nope", "--root", ".", "-o", "x.jsonl"], "Invalid value for '--dataset'"),
])
def test_cli_bad_input_is_one_line(args, message):
    res = CliRunner().invoke(cli, args)
    assert res.exit_code != 0 and message in res.output
    assert "Traceback" not in res.output
    assert [ln for ln in res.output.splitlines() if ln.startswith("Error:")] == [res.output.strip().splitlines()[-1]]


def test_every_adapter_has_a_card():
    from vidpipe.datasets.adapters import ADAPTERS

    for name in ADAPTERS:
        card = cards.load_card(name)
        assert card["name"] == name and "layout" in card and "extract" in card


# ---------------------------------------------------------------- frame-folder datasets
def _frames(folder, n, name="{:05d}.jpg"):
    for i in range(1, n + 1):
        touch(folder / name.format(i))


def test_sthv1_official_layout(tmp_path):
    """something-something-v1-*.csv ('id;label', classes in labels.csv's line order, as mmaction2 parses them)
    and one folder of 00001.jpg... per id in 20bn-something-something-v1/."""
    root = tmp_path / "sthv1"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "something-something-v1-labels.csv").write_text(
        "Holding something\nTurning something upside down\nPretending to pick something up\n")
    (root / "annotations" / "something-something-v1-train.csv").write_text("100218;Turning something upside down\n1;Holding something\n")
    (root / "annotations" / "something-something-v1-validation.csv").write_text("9223;Pretending to pick something up\n777;Holding something\n")
    for vid, n in (("100218", 37), ("1", 12), ("9223", 48)):
        _frames(root / "20bn-something-something-v1" / vid, n)
    m = build_manifest("sthv1", root)
    assert m.classes == ["Holding something", "Turning something upside down", "Pretending to pick something up"]
    assert {r.id: (r.label, r.split, r.path) for r in m.records} == {
        "1": (0, "train", "20bn-something-something-v1/1"), "100218": (1, "train", "20bn-something-something-v1/100218"),
        "9223": (2, "val", "20bn-something-something-v1/9223")}
    assert [x["id"] for x in m.missing] == ["777"] and m.frame_fps == 12.0
    assert Manifest.loads(m.dumps()).frame_fps == 12.0  # the rate travels with the manifest
    (root / "annotations" / "something-something-v1-train.csv").write_text("5;Juggling something\n")
    with pytest.raises(VidpipeError, match="train.csv:1 .*'id;label'"):
        build_manifest("sthv1", root)


def test_rawframes_lists_in_mmaction2_format(tmp_path):
    root = tmp_path / "rf"
    (root / "rawframes" / "a").mkdir(parents=True)
    (root / "k400_train_list_rawframes.txt").write_text("a/v1 30 1\na/v2 31 0\nb/gone 10 2\n")
    (root / "k400_val_list_rawframes.txt").write_text("a/v3 20 2\n")
    for vid in ("a/v1", "a/v2", "a/v3"):
        _frames(root / "rawframes" / vid, 3, "img_{:05d}.jpg")
    m = build_manifest("rawframes", root, frame_fps=25)
    assert m.classes == ["class_0", "class_1", "class_2"] and m.frame_fps == 25
    assert {r.id: (r.label, r.split) for r in m.records} == {"a/v1": (1, "train"), "a/v2": (0, "train"), "a/v3": (2, "val")}
    assert [x["id"] for x in m.missing] == ["b/gone"]
    (root / "classes.txt").write_text("abseiling\narchery\nbaking\n")
    assert build_manifest("rawframes", root).classes == ["abseiling", "archery", "baking"]
    (root / "k400_val_list_rawframes.txt").write_text("a/v3 20 2 4\n")  # a multi-label line
    with pytest.raises(VidpipeError, match="val_list_rawframes.txt:1 .*one label"):
        build_manifest("rawframes", root)
    with pytest.raises(VidpipeError, match="--frame-fps applies to sthv1, rawframes, not hmdb51"):
        build_manifest("hmdb51", root, frame_fps=12)
