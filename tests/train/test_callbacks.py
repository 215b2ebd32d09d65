"""A fit's callbacks: each told, in order, what happened; a new logger is one class in a list."""
import json
import logging

from conftest import write_csv_dataset, write_recipe
from hierclf.recipe.reading import load_recipe
from hierclf.train.callbacks import FitCallback, LogLines, MetricsFile
from hierclf.train.record import FitRecord


class Recorder(FitCallback):
    def __init__(self):
        self.events = []

    def resumed(self, history):
        self.events.append(("resumed", len(history)))

    def epoch(self, entry, improved, epochs):
        self.events.append(("epoch", entry["epoch"], epochs))

    def finished(self, val, result):
        self.events.append(("finished", result["best_epoch"], len(val["probs"])))


def test_a_logger_of_ones_own_hears_every_epoch_of_a_real_fold(tmp_path, monkeypatch, caplog):
    """A fold's record with an extra logger: it hears the start, each epoch, the end, after
    metrics.jsonl has the epoch and before the log line; a process that does not write drops it."""
    import hierclf.train.fold as fold_module

    recorder = Recorder()
    made = []

    def with_recorder(*args, **kwargs):
        record = FitRecord(*args, **{**kwargs, "loggers": [*kwargs.get("loggers", ()), recorder]})
        made.append(record)
        return record

    monkeypatch.setattr(fold_module, "FitRecord", with_recorder)
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(write_csv_dataset(tmp_path / "data", per_class=12))},
                          coarse={"epochs": 2})
    from hierclf.train import fit_coarse
    with caplog.at_level(logging.INFO, logger="hierclf"):
        fit_coarse(load_recipe(recipe), tmp_path / "run", only_fold=0)
    best = json.loads((tmp_path / "run" / "coarse" / "fold-0" / "result.json").read_text())["best_epoch"]
    assert recorder.events == [("resumed", 0), ("epoch", 1, 2), ("epoch", 2, 2), ("finished", best, 12)]
    kinds = [type(callback) for callback in made[0].callbacks]
    assert kinds[0] is MetricsFile and kinds.index(Recorder) < kinds.index(LogLines)
    lines = (tmp_path / "run" / "coarse" / "fold-0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert sum("coarse fold 0 epoch" in record.getMessage() for record in caplog.records) == 2
    assert recorder not in FitRecord("x", tmp_path, writes=False, loggers=[recorder]).callbacks
