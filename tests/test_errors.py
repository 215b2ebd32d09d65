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
