"""`ModelSpec` (model.json): everything needed to rebuild a trained model without the recipe:
architecture, output layout, input size and normalisation."""
from __future__ import annotations

import json
from dataclasses import dataclass

from hierclf.errors import RunError
from hierclf.readback import ReadBack
from hierclf.run.fold_files import RETRAIN
from hierclf.hierarchy.layout import OutputLayout


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    layout: OutputLayout
    in_chans: int
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    drop_rate: float
    separate: bool = False
    """One whole timm model per block instead of a head per block on a shared backbone."""

    @property
    def num_classes(self) -> int:
        return self.layout.width

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.layout.output_names

    def to_json(self) -> str:
        fields = self.layout.spec_fields()
        payload = {"arch": self.arch, "num_classes": fields["num_classes"], "in_chans": self.in_chans,
                   "img_size": self.img_size, "mean": list(self.mean), "std": list(self.std),
                   "drop_rate": self.drop_rate, "class_names": fields["class_names"], "heads": fields["heads"],
                   "separate": self.separate}
        return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, payload: dict, source: str) -> "ModelSpec":
        check = ReadBack(source, RETRAIN)
        check.table(payload, "the file")
        channels = check.number(check.field(payload, "in_chans"), "in_chans", whole=True, lo=1, hi=4)
        check.number(check.field(payload, "img_size"), "img_size", whole=True, lo=1)
        check.numbers(check.field(payload, "mean"), "mean", channels)
        check.numbers(check.field(payload, "std"), "std", channels, gt=0)
        check.number(check.field(payload, "drop_rate"), "drop_rate", lo=0, hi=1)
        check.text(check.field(payload, "arch"), "arch")
        try:
            layout = OutputLayout.from_spec_fields(tuple(payload["class_names"]), payload.get("heads", ()))
            if layout.width != int(payload["num_classes"]):
                raise ValueError(f"num_classes {payload['num_classes']} but {layout.width} class names")
            return cls(arch=payload["arch"], layout=layout, in_chans=int(payload["in_chans"]),
                       img_size=int(payload["img_size"]), mean=tuple(payload["mean"]), std=tuple(payload["std"]),
                       drop_rate=float(payload["drop_rate"]), separate=bool(payload.get("separate", False)))
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise RunError(f"{source} is not a model description: {error}") from None
