"""The `hierclf export` command (added to the CLI's group in `hierclf.cli`); imports stay inside
it, so the CLI starts without onnx or torch."""
from __future__ import annotations

from pathlib import Path

import click

from hierclf.options import parse_folds


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="The .onnx file to write (with --format openvino: the .xml, its weights beside it as .bin).")
@click.option("--format", "file_format", type=click.Choice(["onnx", "openvino"]), default="onnx", show_default=True,
              help="onnx (onnxruntime and most servers), or OpenVINO's IR (pip install 'hierclf[openvino]').")
@click.option("--combiner", default=None, metavar="NAME",
              help="How stage outputs become labels, as for predict (default: the recipe's combine.method).")
@click.option("--folds", default=None, metavar="0,2", help="Only these fold models vote (default: every finished one).")
@click.option("--tta", default=None, metavar="VARIANTS",
              help="Test-time views inside the graph, as for predict; 'none' leaves out the recipe's predict.tta.")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="Write the graph in int8 (onnxruntime's static quantisation; NNCF's for openvino), calibrated on "
                   "256 of the run's training images; refused if it loses over 0.3 macro-F1 points on 512 others.")
@click.option("--dynamo", is_flag=True,
              help="Trace with torch.export (torch's newer exporter) instead of TorchScript, as timm does; slower.")
def export(run: Path, out: Path, file_format: str, combiner: str | None, folds: str | None, tta: str | None,
           quantize: str | None, dynamo: bool) -> None:
    """Write RUN's whole prediction (every stage's fold models, test-time views, calibration and
    combiner) as one ONNX graph: uint8 images N×H×W×C in, probabilities and labels out, served by
    onnxruntime without hierclf (or, with --format openvino, as OpenVINO IR). Needs the export extra:
    pip install 'hierclf[export]' (and 'hierclf[openvino]' for openvino)."""
    from hierclf.data.tta import views_option
    from hierclf.export.onnx_file import export_onnx
    from hierclf.export.openvino_ir import export_openvino
    from hierclf.run.destinations import check_output
    from hierclf.run.folder import Run

    check_output(out, "--out", reads=[run])
    if file_format == "openvino":
        check_output(out.with_suffix(".bin"), "--out", reads=[run])
    write = export_openvino if file_format == "openvino" else export_onnx
    exported = write(Run.open(run), out, combiner, parse_folds(folds), views_option(tta), dynamo,
                     int8=quantize == "int8")
    stages = ", ".join(f"{stage['name']} ({stage['folds']} fold{'s' if stage['folds'] != 1 else ''}, "
                       f"{stage['img_size']} px)"
                       for stage in exported.about["stages"])
    click.echo(f"wrote {out} ({exported.megabytes:.1f} MB): {stages}, combined by {exported.about['combiner']}; "
               f"checked with {'onnxruntime and OpenVINO' if file_format == 'openvino' else 'onnxruntime'} against the "
               f"run's models")
    if "quantized" in exported.metadata:
        click.echo(f"quantized: {exported.metadata['quantized']}")
    if "note" in exported.metadata:
        click.echo(f"note: {exported.metadata['note']}")
