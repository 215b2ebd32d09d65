"""The command line's value types: every number typed checked once, NaN and infinity included."""
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from hierclf.errors import HierclfError
from hierclf.options import FiniteRange, FoldChoice, parse_control, parse_folds, parse_seeds, parse_weights, spelling


def test_a_budget_of_nan_or_infinity_and_a_fold_that_is_no_number_are_refused():
    @click.command()
    @click.option("--budget", type=FiniteRange(min=0.0, min_open=True))
    @click.option("--fold", type=FoldChoice())
    def command(budget, fold):
        click.echo(f"{budget} {fold!r}")

    runner = CliRunner()
    assert runner.invoke(command, ["--budget", "0.5", "--fold", "next"]).output == "0.5 'next'\n"
    assert runner.invoke(command, ["--fold", "2"]).output == "None 2\n"
    for bad in ("nan", "inf"):
        result = runner.invoke(command, ["--budget", bad])
        assert result.exit_code == 2 and "is not a finite number" in result.output
    result = runner.invoke(command, ["--fold", "x"])
    assert result.exit_code == 2 and "expected a fold number or next" in result.output


def test_lists_typed_on_the_command_line():
    assert parse_seeds("0, 2") == [0, 2] and parse_weights("1,1,2") == [1.0, 1.0, 2.0] and parse_weights(None) is None
    assert parse_control("a,b") == [Path("a"), Path("b")] and parse_folds("0,2") == [0, 2]
    for call, text in ((parse_seeds, "0,0"), (parse_seeds, "x"), (parse_weights, "1,a"), (parse_control, ","),
                       (parse_folds, "-1"), (parse_folds, "a")):
        with pytest.raises(HierclfError, match=repr(text)):
            call(text)


def test_a_command_spells_a_parameter_by_its_own_option_or_argument():
    @click.group()
    def group():
        pass

    @group.command()
    @click.argument("run")
    @click.option("--set", "overrides", multiple=True)
    @click.option("-q", "--quiet", is_flag=True)
    def fit(run, overrides, quiet):
        pass

    context = click.Context(group)
    context.invoked_subcommand = "fit"
    spelt = spelling(group, context)
    assert [spelt(name) for name in ("overrides", "quiet", "run", "ids_outside")] == \
        ["--set", "--quiet", "RUN", "--ids-outside"]
