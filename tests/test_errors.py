"""The one line a user sees for an error, also when it comes back from a loader worker."""
from hierclf.errors import DataError, HierclfError, RecipeError, RunError, user_message


def test_errors_a_user_can_fix_share_one_base():
    assert all(issubclass(kind, HierclfError) for kind in (RecipeError, DataError, RunError))


def test_a_worker_traceback_folds_to_our_original_message():
    folded = DataError("Caught DataError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
                       '  File "x.py", line 3, in f\n    raise DataError(...)\n'
                       "hierclf.errors.DataError: image a.jpg cannot be decoded (truncated)\n")
    assert user_message(folded) == "image a.jpg cannot be decoded (truncated)"
    assert user_message(RecipeError("r.toml: coarse.lr = -1: expected a value > 0")) == \
        "r.toml: coarse.lr = -1: expected a value > 0"


def test_the_library_names_parameters_and_the_command_line_spells_its_options(tmp_path):
    """An estimator or notebook user reads the parameter they passed (`overrides`, `combiner`); a
    command-line user the option they typed (`--set`, `--combiner`), from the same raise."""
    import pytest

    from conftest import cli, write_csv_dataset, write_recipe
    from hierclf.errors import option
    from hierclf.predict.pipeline import Inference
    from hierclf.recipe.reading import load_recipe

    error = RecipeError(f"{option('overrides')} 'x': expected section.key=value; see {option('ids_outside')}")
    assert str(error) == "overrides 'x': expected section.key=value; see ids_outside"
    assert error.spelt(lambda name: f"--{name}") == "--overrides 'x': expected section.key=value; see --ids_outside"
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(write_csv_dataset(tmp_path / "data", per_class=3))})
    with pytest.raises(RecipeError, match="^overrides coarse.epochs=\"x\": expected an integer"):
        load_recipe(recipe, ['coarse.epochs="x"'])
    with pytest.raises(HierclfError, match="^threads 2000: expected 0"):
        Inference(threads=2000)
    result = cli("fit-coarse", recipe, "--out", tmp_path / "run", "--set", 'coarse.epochs="x"')
    assert result.exit_code == 2 and '--set coarse.epochs="x": expected an integer' in result.stderr
    assert "overrides" not in result.stderr and "\x1e" not in result.stderr
    result = cli("predict", tmp_path / "none", tmp_path / "data" / "train.csv", "--out", tmp_path / "p.csv",
                 "--shard", "5/2")
    assert result.exit_code == 2 and "--shard '5/2': expected I/N" in result.stderr, result.stderr
