"""Where a command may write: never onto what it reads, and never inside a run folder, whose files
only the run's own commands write. One check for every command's output, before any work, so a
mistyped --out cannot replace a user's labels with predictions or wreck a run."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from hierclf.data.images import is_image_file
from hierclf.data.sources import default_image_dir
from hierclf.errors import RunError
from hierclf.recipe.schema import Recipe
from hierclf.run.files import check_writable

RUN_MARKERS = ("recipe.toml", "hierarchy.json")
"""The files every run folder holds (`Run.open` needs both)."""


def is_run_folder(path: Path) -> bool:
    return all((path / name).is_file() for name in RUN_MARKERS)


def enclosing_run(path: Path) -> Path | None:
    """The run folder `path` lies in (`path` itself not counted), if any."""
    return next((parent for parent in Path(path).resolve().parents if is_run_folder(parent)), None)


def recipe_inputs(recipe: Recipe) -> list[Path]:
    """Every file or folder a recipe reads: its data (a CSV's image folder too, where it is the
    default), starting weights, and the flat run it builds on."""
    data = recipe.data
    paths = [data.csv, data.images, data.folder, data.mask_images, recipe.hierarchy.coarse_run,
             recipe.coarse.weights, recipe.fine.weights, *(stage.weights for _, stage in recipe.specialists)]
    found = [Path(path) for path in paths if path]
    if data.csv and not data.images:
        found.append(default_image_dir(Path(data.csv)))
    return found


def check_output(path: Path, option: str, reads: Iterable[Path] = (), folder: bool = False,
                 run: bool = False) -> None:
    """Refuse, before any work, an output `path` that cannot be written (`check_writable`), that
    is one of `reads`, that lies inside one of them as a folder or an image (what a command reads
    from a folder), that (a folder) holds one of them, or that lies inside a run folder. With
    `run` the output is a run folder itself, so an existing one is allowed (a resumed run);
    otherwise an existing run folder is refused too."""
    check_writable(path, option, folder=folder)
    target = Path(path).resolve()
    where = f"{option} {path}"
    for read in reads:
        source = Path(read).resolve()
        if target == source:
            raise RunError(f"{where}: that is {read}, which this command reads; write somewhere else")
        if source in target.parents and (folder or is_image_file(target)):
            what = "a folder" if folder else "an image"
            raise RunError(f"{where}: that is {what} inside {read}, whose images this command reads; write "
                           f"somewhere else")
        if folder and target in source.parents:
            raise RunError(f"{where}: that folder holds {read}, which this command reads; write somewhere else")
    inside = enclosing_run(target)
    if inside is not None:
        raise RunError(f"{where}: that lies inside the run folder {inside}, whose files only its own commands "
                       f"write; write somewhere else")
    if not run and target.is_dir() and is_run_folder(target):
        raise RunError(f"{where}: that is a run folder; write somewhere else")


def predict_inputs(runs: Iterable[Path], input_path: Path, images: Path | None) -> list[Path]:
    """What `predict` reads: the runs, the input, and a CSV input's image folder."""
    reads = [*runs, input_path]
    if images is not None:
        reads.append(images)
    elif input_path.is_file():
        reads.append(default_image_dir(input_path))
    return reads
