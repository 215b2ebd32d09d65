"""Training: one model on one split (`fit`), folds (`assign_folds`), a stage across folds, and the
library behind `fit-coarse` and `fit-fine` (`fit_coarse`, `fit_fine`)."""
from hierclf.train.commands import fit_coarse, fit_fine
from hierclf.train.kfold import assign_folds
from hierclf.train.loop import fit
from hierclf.train.stage import gather_oof, train_stage
from hierclf.train.state import FitResult

__all__ = ["FitResult", "assign_folds", "fit", "fit_coarse", "fit_fine", "gather_oof", "train_stage"]
