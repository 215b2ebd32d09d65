"""Training: one model on one split (`fit`), folds (`assign_folds`), stages into a run folder."""
from hierclf.train.commands import fit_coarse, fit_fine
from hierclf.train.kfold import assign_folds
from hierclf.train.loop import FitResult, fit
from hierclf.train.stage import gather_oof, train_stage

__all__ = ["FitResult", "assign_folds", "fit", "fit_coarse", "fit_fine", "gather_oof", "train_stage"]
