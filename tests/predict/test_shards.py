"""Prediction in shards: every N-th image per worker, the parts joined once, in input order."""
import pytest

from conftest import cli
from hierclf.data import load_input_items
from hierclf.errors import HierclfError
from hierclf.predict.pipeline import Inference, predict_items
from hierclf.predict.output import write_predictions
from hierclf.predict.shards import Shard, merge_shards, shard_origin, write_shard
from hierclf.run.folder import Run
from hierclf.run.locks import holding


def test_three_shards_merged_equal_the_unsharded_predictions(flat_run, tmp_path):
    run, _, train_csv, _ = flat_run
    whole = cli("predict", run, train_csv, "--out", tmp_path / "whole.csv", "--probs", "--workers", "0")
    assert whole.exit_code == 0, whole.output
    for shard in (2, 0, 1):  # in any order; the last to finish joins them
        result = cli("predict", run, train_csv, "--out", tmp_path / "sharded.csv", "--probs", "--workers", "0",
                     "--shard", f"{shard}/3")
        assert result.exit_code == 0, result.output
        assert ("joined them into" in result.stdout) == (shard == 1)
    assert (tmp_path / "sharded.csv").read_text() == (tmp_path / "whole.csv").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sharded.csv", "whole.csv"]  # parts removed
    result = cli("predict", run, train_csv, "--out", tmp_path / "x.csv", "--shard", "3/3")
    assert result.exit_code == 2 and "--shard '3/3': expected I/N with 0 <= I < N" in result.stderr


def test_shards_finishing_together_join_once(tmp_path):
    """While one shard holds the join, another that finds every part written leaves it; once
    joined, a late caller finds nothing left to join."""
    out = tmp_path / "preds.csv"
    for shard, rows in enumerate((["a,0\n", "c,0\n"], ["b,1\n"])):
        Shard(shard, 2).part(out, "k").write_text("id,label\n" + "".join(rows))
    with holding(tmp_path, "joining", lock=".preds.csv.joining"):
        assert not merge_shards(out, 2, "k") and not out.exists()
    assert merge_shards(out, 2, "k")
    assert out.read_text() == "id,label\na,0\nb,1\nc,0\n"
    assert not merge_shards(out, 2, "k") and sorted(p.name for p in tmp_path.iterdir()) == ["preds.csv"]


def test_a_library_user_shards_as_the_command_does(flat_run, tmp_path):
    run = Run.open(flat_run[0])
    items = load_input_items(flat_run[2], run.hierarchy.class_names)
    inference = Inference(workers=0, device="cpu")
    write_predictions(tmp_path / "whole.csv", predict_items(run, items, inference=inference), with_probs=True)
    origin = shard_origin(items, [run])
    joined = [write_shard(tmp_path / "sharded.csv", shard, predict_items(run, shard.rows(items), inference=inference),
                          origin, with_probs=True) for shard in (Shard(1, 2), Shard(0, 2))]
    assert joined == [False, True]
    assert (tmp_path / "sharded.csv").read_text() == (tmp_path / "whole.csv").read_text()
    assert [len(Shard(index, 3).rows(items)) for index in range(3)] == [20, 20, 20]
    with pytest.raises(HierclfError, match="shard 3 of 3: expected 0 <= I < N"):
        Shard(3, 3)
    assert Shard.parse("1/4") == Shard(1, 4)


def test_a_stale_part_of_another_input_or_other_options_is_never_joined(flat_run, tmp_path):
    """An earlier attempt left shard 0 of another input (and one with other columns): the shards
    of this prediction remove them and join only their own, exactly the unsharded output."""
    run, _, train_csv, _ = flat_run
    rows = train_csv.read_text().splitlines()
    other = tmp_path / "other.csv"
    other.write_text("\n".join(rows[:1] + rows[5:25]) + "\n")
    out = tmp_path / "preds.csv"
    args = ("--workers", "0", "--images", train_csv.with_suffix(""))
    assert cli("predict", run, other, "--out", out, "--shard", "0/2", *args).exit_code == 0
    stale = list(tmp_path.glob("preds.csv.part-*"))
    assert cli("predict", run, train_csv, "--out", out, "--shard", "1/2", "--probs", *args).exit_code == 0
    assert len(stale) == 1 and not stale[0].exists()
    assert cli("predict", run, train_csv, "--out", out, "--shard", "1/2", *args).exit_code == 0
    assert len(list(tmp_path.glob("preds.csv.part-*"))) == 1
    result = cli("predict", run, train_csv, "--out", out, "--shard", "0/2", *args)
    assert result.exit_code == 0 and "joined them into" in result.stdout, result.output
    assert cli("predict", run, train_csv, "--out", tmp_path / "whole.csv", *args).exit_code == 0
    assert out.read_text() == (tmp_path / "whole.csv").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.csv", "preds.csv", "whole.csv"]


def test_parts_that_do_not_fit_together_are_refused(tmp_path):
    out = tmp_path / "preds.csv"
    Shard(0, 2).part(out, "k").write_text("id,label\na,0\nc,0\nd,1\n")
    Shard(1, 2).part(out, "k").write_text("id,label\nb,1\n")
    with pytest.raises(HierclfError, match="do not fit together"):
        merge_shards(out, 2, "k")
    assert not out.exists()


def test_more_shards_than_rows_are_refused_before_any_part_is_written(flat_run, tmp_path):
    """A huge N once allocated in proportion to N (20 GB before the kernel killed it) and left a
    part file behind: the part count is bounded by the rows."""
    import resource
    import time

    run, _, train_csv, _ = flat_run
    rows = len(train_csv.read_text().splitlines()) - 1
    before, started = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.monotonic()
    result = cli("predict", run, train_csv, "--out", tmp_path / "p.csv", "--shard", "1/1000000000000")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert f"--shard 1/1000000000000: the input holds {rows} images, so it splits into at most {rows} shards" \
        in result.stderr
    assert time.monotonic() - started < 30 and resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000
    result = cli("predict", run, train_csv, "--out", tmp_path / "p.csv", "--shard", "0/" + "9" * 5000)
    assert result.exit_code == 2 and "expected I/N with 0 <= I < N" in result.stderr, result.output
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(HierclfError, match="splits into at most 2 shards"):
        Shard(0, 3).rows(load_input_items(train_csv, Run.open(run).hierarchy.class_names).subset([0, 1]))
