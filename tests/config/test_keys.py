"""A recipe key declared once, its docs and bounds in its field's metadata."""
import dataclasses

from hierclf.config.data import DataConfig
from hierclf.config.keys import setting


def test_a_key_carries_its_docs_and_bounds_and_a_table_default_is_not_shared():
    @dataclasses.dataclass(frozen=True)
    class Section:
        rate: float = setting(0.1, "The rate.", gt=0.0, lt=1.0)
        table: dict = setting({"a": 1}, "A table.")
        folder: str = setting("", "A folder.", path=True, runtime=True)

    fields = {field.name: field for field in dataclasses.fields(Section)}
    assert fields["rate"].metadata["doc"] == "The rate." and (fields["rate"].metadata["gt"], fields["rate"].metadata["lt"]) == (0.0, 1.0)
    assert fields["folder"].metadata["path"] and fields["folder"].metadata["runtime"]
    first, second = Section(), Section()
    assert first.table == {"a": 1} and first.table is not second.table


def test_the_data_table_names_where_its_rows_come_from():
    assert DataConfig(csv="train.csv").source == "train.csv" and DataConfig(folder="tree").source == "tree"
    assert DataConfig().source == "the rows"
    assert all(field.metadata["doc"] for field in dataclasses.fields(DataConfig))
