"""report.html: one self-contained page, every image inline."""
import base64
from html.parser import HTMLParser

from conftest import cli


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.headings, self.current = [], [], None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes)
        self.current = tag

    def handle_data(self, data):
        if self.current in ("h2", "h3") and data.strip():
            self.headings.append(data.strip())


def test_the_report_page_embeds_every_image_and_shows_the_confused_images(detail_runs, tmp_path):
    import shutil

    shutil.copytree(detail_runs / "flat", tmp_path / "flat")  # the flat run confuses checked and plain
    result = cli("evaluate", tmp_path / "flat")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "flat" / "report.html").read_text()
    page = Page()
    page.feed(text)
    assert text.startswith("<!doctype html>") and text.rstrip().endswith("</html>")
    for heading in ("Scores", "Per class F1", "Confusion (flat)", "Most confused (flat)", "Calibration (flat)",
                    "Learning curves"):
        assert heading in page.headings, heading
    assert page.images and all(img["src"].startswith("data:image/png;base64,") for img in page.images)
    for img in page.images:  # every image is a whole PNG, inline: nothing to fetch
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    thumbs = [img for img in page.images if img.get("class") == "thumb"]
    confused = [h for h in page.headings if " taken for " in h]
    assert confused and thumbs  # the images the model got wrong, by id
    assert {img["alt"] for img in thumbs} <= {line.split(",")[0] for line in
                                              (detail_runs / "data" / "train.csv").read_text().splitlines()[1:]}
    assert len([img for img in page.images if "curves" in img["alt"]]) == 1  # one stage: the flat model
    assert len(text) < 1_000_000  # thumbnails, not full images
