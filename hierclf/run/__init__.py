"""The run folder: its files written atomically (`files`), one writer per fold (`locks`), the run
opened with its recipe, hierarchy and folds (`folder`), its out-of-fold outputs (`outputs`), its
temperatures (`calibration`) and its fitted combiners (`fitted`)."""
