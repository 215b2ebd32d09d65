"""The recipe's building blocks the lower layers read: `setting` (how a key is declared) and the
[data] table (which data/ reads), so data/ never imports recipe/, which imports data/."""
