"""Recipes: the schema of every key (`schema`), reading a TOML file with `--set` overrides into a
checked, frozen `Recipe` (`reading`, `coerce`, `overrides`), the rules that tie keys together
(`rules`), and the key tables of the docs (`reference`)."""
