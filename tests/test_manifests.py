"""Labelled-data formats: our manifest, GNHK, Ground Truth, splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from batch.core.errors import InputError
from batch.core.manifest import Annotation, ManifestError, Sample, is_recognition_target
from batch.core.schema import DocumentRecord, Line, Page, Point, Word
from batch.exports import render
from jobs.manifests import (
    convert_gnhk,
    convert_ground_truth,
    convert_xml,
    ground_truth_sample,
    input_manifest,
    label_category_config,
    labeling_job_request,
    read_archive_xml,
    read_manifest,
    resolve_source,
    samples_to_gnhk,
    split_manifest,
    to_ground_truth_line,
    write_manifest,
)
from jobs.manifests import main as manifests_main


def _quad(x0, y0, x1, y1):
    return [{"x": x0, "y": y0}, {"x": x1, "y": y0}, {"x": x1, "y": y1}, {"x": x0, "y": y1}]


SAMPLES = [
    Sample(
        "pages/a.jpg",
        [
            Annotation("Dear", _quad(10, 20, 60, 40), 0, "H"),
            Annotation("£12.50", _quad(70, 20, 130, 42), 0, "H"),
            Annotation("%SC%", _quad(10, 60, 50, 80), 1, "H"),
            Annotation("ACME", _quad(5, 1, 55, 15), 2, "P"),
        ],
    ),
    Sample("/abs/b.png", []),
    Sample("s3://bucket/c.tif", [Annotation("é", _quad(1, 1, 5, 5))]),
]


def test_manifest_round_trip(tmp_path):
    path = write_manifest(SAMPLES, tmp_path / "sub" / "manifest.jsonl")
    assert read_manifest(path) == SAMPLES
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert first["annotations"]["texts"][0] == {
        "text": "Dear",
        "polygon": _quad(10, 20, 60, 40),
        "line_idx": 0,
        "type": "H",
    }


def test_resolve_source(tmp_path):
    m = tmp_path / "m.jsonl"
    assert resolve_source(SAMPLES[0], m) == str(tmp_path / "pages/a.jpg")
    assert resolve_source(SAMPLES[1], m) == "/abs/b.png"
    assert resolve_source(SAMPLES[2], m) == "s3://bucket/c.tif"
    assert resolve_source(SAMPLES[0], "s3://bkt/data/m.jsonl") == "s3://bkt/data/pages/a.jpg"


@pytest.mark.parametrize(
    "line, words",
    [
        ("not json", "not JSON"),
        ('{"annotations": {"texts": []}}', "source-ref"),
        ('{"source-ref": "a.jpg", "annotations": {"texts": [{"text": "x"}]}}', "polygon"),
        (
            '{"source-ref": "a.jpg", "annotations": {"texts": [{"text": "x", '
            '"polygon": [{"x": 1}, {"x": 2}, {"x": 3}]}]}}',
            "bad polygon point",
        ),
        (
            '{"source-ref": "a.jpg", "annotations": {"texts": [{"text": "x", "polygon": [[0, 0], [1, 0], [1, 1]], '
            '"type": "Z"}]}}',
            "type",
        ),
    ],
)
def test_bad_manifests_raise_typed_errors(tmp_path, line, words):
    p = tmp_path / "bad.jsonl"
    p.write_text(line + "\n")
    with pytest.raises(ManifestError, match=words) as e:
        read_manifest(p)
    assert isinstance(e.value, InputError) and ":1" in str(e.value)
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "missing.jsonl")


def test_recognition_targets():
    assert is_recognition_target("word") and is_recognition_target("£3")
    assert not any(is_recognition_target(t) for t in ("%math%", "%SC%", "%NA%", ""))


def test_split_is_deterministic_disjoint_and_complete():
    samples = [Sample(f"{i}.jpg") for i in range(50)]
    train, test = split_manifest(samples, 0.2, seed=3)
    assert (train, test) == split_manifest(samples, 0.2, seed=3)
    assert split_manifest(samples, 0.2, seed=4)[1] != test
    assert len(test) == 10 and {s.source_ref for s in train} | {s.source_ref for s in test} == {
        s.source_ref for s in samples
    }
    assert not {s.source_ref for s in train} & {s.source_ref for s in test}
    assert len(split_manifest(samples[:2], 0.1)[1]) == 1
    with pytest.raises(ValueError):
        split_manifest(samples, 1.5)


def test_gnhk_conversion(tmp_path):
    root = tmp_path / "gnhk"
    (root / "train").mkdir(parents=True)
    Image.new("RGB", (200, 100), "white").save(root / "train" / "eng_1.jpg")
    words = [
        {
            "text": "hello",
            "polygon": {"x0": 1, "y0": 2, "x1": 50, "y1": 2, "x2": 50, "y2": 20, "x3": 1, "y3": 20},
            "line_idx": 0,
            "type": "H",
        },
        {
            "text": "%math%",
            "polygon": {"x0": 60, "y0": 2, "x1": 90, "y1": 3, "x2": 90, "y2": 21, "x3": 60, "y3": 20},
            "line_idx": 0,
            "type": "H",
        },
    ]
    (root / "train" / "eng_1.json").write_text(json.dumps(words))
    (root / "notes.json").write_text("{}")  # no image beside it: ignored
    path = convert_gnhk(root, tmp_path / "out" / "manifest.jsonl")
    [sample] = read_manifest(path)
    assert sample.source_ref == "../gnhk/train/eng_1.jpg"
    assert resolve_source(sample, path).endswith("gnhk/train/eng_1.jpg")
    assert [a.text for a in sample.annotations] == ["hello", "%math%"]
    assert sample.annotations[0].polygon == _quad(1, 2, 50, 20)
    assert samples_to_gnhk(sample) == words
    (root / "train" / "eng_1.json").write_text(json.dumps([{"text": "x"}]))
    with pytest.raises(ManifestError, match="not a GNHK word"):
        convert_gnhk(root)


def test_ground_truth_bounding_box_round_trip(tmp_path):
    sample = Sample(
        "s3://b/p.jpg",
        [Annotation("Dear", _quad(10, 20, 60, 40)), Annotation("Sir,", _quad(70, 20, 110, 41))],
    )
    line = to_ground_truth_line(sample, "words", image_size=(200, 100))
    assert line["words"]["annotations"][0] == {
        "class_id": 0,
        "left": 10,
        "top": 20,
        "width": 50,
        "height": 20,
    }
    p = tmp_path / "output.manifest"
    p.write_text(json.dumps(line) + "\n")
    back = convert_ground_truth(p, tmp_path / "manifest.jsonl")
    assert back == [sample] and read_manifest(tmp_path / "manifest.jsonl") == [sample]


def test_ground_truth_polygons_and_transcriptions():
    polygon_task = {
        "source-ref": "s3://b/p.jpg",
        "lines": {
            "annotations": [
                {
                    "class_id": 0,
                    "vertices": [{"x": 1, "y": 1}, {"x": 9, "y": 1}, {"x": 9, "y": 5}, {"x": 1, "y": 5}],
                    "label-category-attributes": {"transcription": "hi!"},
                }
            ],
            "image_size": [{"width": 10, "height": 6, "depth": 3}],
        },
        "lines-metadata": {"class-map": {"0": "word"}, "type": "groundtruth/polygon"},
    }
    s = ground_truth_sample(polygon_task)
    assert s.annotations[0].text == "hi!" and len(s.annotations[0].polygon) == 4
    crowd = {
        "source-ref": "s3://b/q.jpg",
        "label": {
            "annotatedResult": {
                "inputImageProperties": {"width": 10, "height": 10},
                "polygons": [{"label": "word", "vertices": [[0, 0], [4, 0], [4, 4]]}],
            }
        },
        "label-metadata": {"type": "groundtruth/custom"},
    }
    s = ground_truth_sample(crowd)
    assert s.annotations[0].text == "word" and s.annotations[0].polygon[2] == {"x": 4.0, "y": 4.0}
    # a custom crowd-polygon job without consolidation: each worker's form output as a JSON string
    # (shape from the Ground Truth developer guide: crowd-polygon element output, custom job output)
    form = {
        "annotatedResult": {
            "inputImageProperties": {"height": 853, "width": 1280},
            "polygons": [
                {
                    "label": "Dear",
                    "vertices": [{"x": 570, "y": 239}, {"x": 603, "y": 239}, {"x": 603, "y": 260}],
                }
            ],
        }
    }
    custom = {
        "source-ref": "s3://b/c.jpg",
        "words": {
            "annotationsFromAllWorkers": [
                {"workerId": "private.eu-west-1.1", "annotationData": {"content": json.dumps(form)}},
                {"workerId": "private.eu-west-1.2", "annotationData": {"content": "{}"}},
            ]
        },
        "words-metadata": {"type": "groundtruth/custom", "job-name": "w", "human-annotated": "yes"},
    }
    s = ground_truth_sample(custom)
    assert [a.text for a in s.annotations] == ["Dear"] and s.annotations[0].polygon[0] == {
        "x": 570.0,
        "y": 239.0,
    }
    custom["words"]["annotationsFromAllWorkers"][0]["annotationData"]["content"] = "{not json"
    with pytest.raises(ManifestError, match="annotationsFromAllWorkers"):
        ground_truth_sample(custom)
    with pytest.raises(ManifestError, match="label attribute"):
        ground_truth_sample({"source-ref": "s3://b/r.jpg"})
    with pytest.raises(ManifestError, match="neither a box nor"):
        ground_truth_sample(
            {"source-ref": "s3://b/r.jpg", "x": {"annotations": [{"class_id": 0}]}, "x-metadata": {}}
        )


def test_labeling_job_request_is_a_complete_pure_request():
    req = labeling_job_request(
        "htr-words-1",
        "s3://b/in.manifest",
        "s3://b/out/",
        "arn:aws:iam::1:role/r",
        "arn:aws:sagemaker:eu-west-1:1:workteam/private-crowd/t",
        "s3://b/labels.json",
        "s3://b/ui.liquid",
        region="eu-west-1",
    )
    htc = req["HumanTaskConfig"]
    assert req["LabelAttributeName"] == "words"
    assert htc["PreHumanTaskLambdaArn"] == "arn:aws:lambda:eu-west-1:568282634449:function:PRE-BoundingBox"
    assert htc["AnnotationConsolidationConfig"]["AnnotationConsolidationLambdaArn"].endswith(
        "ACS-BoundingBox"
    )
    assert req["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"] == "s3://b/in.manifest"
    seg = labeling_job_request(
        "j",
        "s3://b/i",
        "s3://b/o",
        "r",
        "w",
        "s3://b/l",
        "s3://b/u",
        "us-east-1",
        task="SemanticSegmentation",
    )
    assert seg["LabelAttributeName"].endswith("-ref")
    with pytest.raises(ValueError, match="region"):
        labeling_job_request("j", "s3://b/i", "s3://b/o", "r", "w", "s3://b/l", "s3://b/u", "mars-1")
    with pytest.raises(ValueError, match="s3://"):
        labeling_job_request("j", "/local", "s3://b/o", "r", "w", "s3://b/l", "s3://b/u", "us-east-1")
    assert input_manifest(["s3://b/1.jpg"]) == '{"source-ref": "s3://b/1.jpg"}\n'
    with pytest.raises(ManifestError):
        input_manifest(["/tmp/1.jpg"])
    assert label_category_config(["word"])["labels"] == [{"label": "word"}]


# ---- PAGE XML and ALTO imports ----------------------------------------------------------------------


def _record(image: str) -> DocumentRecord:
    def word(t, x0, y0, x1, y1, k, li):
        return Word(t, 0.9, 0.8, [Point(x0, y0), Point(x1, y0), Point(x1, y1), Point(x0, y1)], k, li)

    l0 = Line(
        0,
        [word("Dear", 20, 30, 90, 60, 0, 0), word("Ann,", 100, 32, 160, 62, 1, 0)],
        [Point(18, 28), Point(162, 28), Point(162, 64), Point(18, 64)],
        [Point(18, 58), Point(162, 60)],
    )
    l1 = Line(
        1,
        [word("thank", 20, 90, 110, 120, 2, 1), word("you", 120, 90, 170, 120, 3, 1)],
        [Point(18, 88), Point(172, 88), Point(172, 122), Point(18, 122)],
        [Point(18, 118), Point(172, 118)],
    )
    return DocumentRecord("d" * 24, image, [Page(1, 200, 150, [l0, l1], dpi=300.0)], "m", "r", 0)


@pytest.mark.parametrize("fmt", ["page", "alto"])
def test_our_export_imports_back_to_the_same_lines(tmp_path, fmt):
    """Round trip: our PAGE / ALTO export -> convert_xml -> the same lines, text, polygons, baselines
    and (at word level) words."""
    Image.new("RGB", (200, 150), "white").save(tmp_path / "scan.png")
    doc = _record(str(tmp_path / "scan.png"))
    for rel, data in render(doc, fmt).items():
        (tmp_path / Path(rel).name).write_bytes(data)
    lines = convert_xml(tmp_path, level="line")
    (sample,) = lines
    assert sample.source_ref == "scan.png" and sample.level == "line"
    assert [a.text for a in sample.annotations] == ["Dear Ann,", "thank you"]
    for a, ln in zip(sample.annotations, doc.pages[0].lines):
        assert a.polygon == [{"x": p.x, "y": p.y} for p in ln.polygon]
        assert a.baseline == [{"x": p.x, "y": p.y} for p in ln.baseline]
        assert a.line_idx == ln.line_idx
    assert read_manifest(tmp_path / "manifest.jsonl") == lines  # written, and read back
    words = convert_xml(tmp_path, tmp_path / "words.jsonl", level="word")[0].annotations
    assert [(a.text, a.line_idx) for a in words] == [(w.text, w.line_idx) for w in doc.pages[0].words]
    assert words[2].polygon == [
        {"x": 20, "y": 90},
        {"x": 110, "y": 90},
        {"x": 110, "y": 120},
        {"x": 20, "y": 120},
    ]


TRANSKRIBUS = """<?xml version="1.0" encoding="UTF-8"?>
<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2013-07-15">
  <Metadata><Creator>Transkribus</Creator><Created>2020-01-01T00:00:00</Created>
    <LastChange>2020-01-01T00:00:00</LastChange></Metadata>
  <Page imageFilename="folio_1.jpg" imageWidth="300" imageHeight="200">
    <ReadingOrder><OrderedGroup id="ro1" caption="Regions reading order">
      <RegionRefIndexed index="0" regionRef="r2"/><RegionRefIndexed index="1" regionRef="r1"/>
    </OrderedGroup></ReadingOrder>
    <TextRegion id="r1" custom="readingOrder {index:1;}">
      <Coords points="10,120 290,120 290,190 10,190"/>
      <TextLine id="r1l2" custom="readingOrder {index:1;}">
        <Coords points="10,160 200,160 200,185 10,185"/><Baseline points="10,180 200,181"/>
        <TextEquiv><Unicode>second of r1</Unicode></TextEquiv></TextLine>
      <TextLine id="r1l1" custom="readingOrder {index:0;}">
        <Coords points="10,125 200,125 200,150 10,150"/><Baseline points="10,145 200,146"/>
        <TextEquiv><Unicode>first of r1</Unicode></TextEquiv></TextLine>
      <TextLine id="r1l3"><Coords points="10,186 50,186 50,189 10,189"/></TextLine>
    </TextRegion>
    <TextRegion id="r2"><Coords points="10,10 290,10 290,60 10,60"/>
      <TextLine id="r2l1"><Coords points="12,12 280,14 280,50 12,48"/><Baseline points="12,44 280,46"/>
        <Word id="w1"><Coords points="12,12 100,12 100,48 12,48"/>
          <TextEquiv><Unicode>Anno</Unicode></TextEquiv></Word>
        <Word id="w2"><Coords points="110,12 280,14 280,50 110,48"/>
          <TextEquiv><Unicode>1858</Unicode></TextEquiv></Word>
        <TextEquiv index="1"><Unicode>alternative</Unicode></TextEquiv>
        <TextEquiv index="0"><Unicode>Anno 1858</Unicode></TextEquiv></TextLine>
    </TextRegion>
  </Page>
</PcGts>"""

ESCRIPTORIUM = """<?xml version="1.0" encoding="UTF-8"?>
<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#">
  <Description><MeasurementUnit>pixel</MeasurementUnit>
    <sourceImageInformation><fileName>folio_1.jpg</fileName></sourceImageInformation></Description>
  <Layout><Page WIDTH="300" HEIGHT="200" PHYSICAL_IMG_NR="1" ID="p1"><PrintSpace>
    <TextBlock ID="b1"><TextLine ID="l1" BASELINE="12 44 280 46" HPOS="12" VPOS="12" WIDTH="268" HEIGHT="38">
      <Shape><Polygon POINTS="12 12 280 14 280 50 12 48"/></Shape>
      <String CONTENT="Anno" HPOS="12" VPOS="12" WIDTH="88" HEIGHT="36"/><SP/>
      <String CONTENT="1858" HPOS="110" VPOS="12" WIDTH="170" HEIGHT="38"/></TextLine>
    <TextLine ID="l2" HPOS="10" VPOS="125" WIDTH="190" HEIGHT="25" BASELINE="145">
      <String CONTENT="older" HPOS="10" VPOS="125" WIDTH="60" HEIGHT="25"/><SP/>
      <String CONTENT="ALTO" HPOS="80" VPOS="125" WIDTH="60" HEIGHT="25"/></TextLine>
    </TextBlock></PrintSpace></Page></Layout>
</alto>"""


def test_transkribus_page_xml_in_reading_order(tmp_path):
    (tmp_path / "page").mkdir()
    (tmp_path / "page" / "folio_1.xml").write_text(TRANSKRIBUS)
    Image.new("RGB", (300, 200)).save(tmp_path / "folio_1.jpg")  # Transkribus: XML in page/
    (sample,) = convert_xml(tmp_path)
    assert sample.source_ref == "folio_1.jpg"
    assert [a.text for a in sample.annotations] == ["Anno 1858", "first of r1", "second of r1"]
    assert sample.annotations[1].baseline == [{"x": 10, "y": 145}, {"x": 200, "y": 146}]
    assert [a.line_idx for a in sample.annotations] == [0, 1, 2]  # the untranscribed line: dropped
    words = convert_xml(tmp_path, tmp_path / "w.jsonl", level="word")[0].annotations
    assert [a.text for a in words] == ["Anno", "1858"]


def test_escriptorium_alto_with_polygons_and_old_baselines(tmp_path):
    (tmp_path / "folio_1.xml").write_text(ESCRIPTORIUM)
    Image.new("RGB", (300, 200)).save(tmp_path / "folio_1.jpg")
    (page,) = read_archive_xml(ESCRIPTORIUM.encode())
    assert (page.image, page.width, page.height) == ("folio_1.jpg", 300, 200)
    (sample,) = convert_xml(tmp_path)
    a, b = sample.annotations
    assert (a.text, len(a.polygon), a.baseline) == ("Anno 1858", 4, [{"x": 12, "y": 44}, {"x": 280, "y": 46}])
    assert b.text == "older ALTO" and b.polygon[2] == {"x": 200, "y": 150}  # from HPOS/VPOS/...
    assert b.baseline == [{"x": 10, "y": 145}, {"x": 200, "y": 145}]  # ALTO 2/3: a height


def test_imported_lines_feed_the_line_recogniser_cache(tmp_path):
    """The path `htr train recogniser --lines` takes: manifest -> jobs.line_data cache."""
    from jobs.line_data import build_cache

    data = tmp_path / "archive"
    data.mkdir()
    (data / "folio_1.xml").write_text(ESCRIPTORIUM)
    Image.new("RGB", (300, 200), "white").save(data / "folio_1.jpg")
    assert manifests_main(["from-xml", str(data)]) == 0
    summary = build_cache(data, tmp_path / "cache", split_file=tmp_path / "validation.txt")
    assert summary["lines"] == 2
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert [ln["text"] for ln in index["lines"]] == ["Anno 1858", "older ALTO"]


def test_bad_archive_xml(tmp_path):
    with pytest.raises(ManifestError, match="neither"):
        read_archive_xml(b"<html/>")
    with pytest.raises(ManifestError, match="not XML"):
        read_archive_xml(b"<alto")
    with pytest.raises(ManifestError, match="mm10"):
        read_archive_xml(ESCRIPTORIUM.replace(">pixel<", ">mm10<").encode())
    (tmp_path / "x.xml").write_text(ESCRIPTORIUM)
    with pytest.raises(ManifestError, match="image"):
        convert_xml(tmp_path)  # no folio_1.jpg


# kraken's exports (`kraken -a`/`-x` ... segment -bl ocr): ALTO 4 with tags, lines with many-point
# baselines and polygons as space-separated numbers, words (String) holding Glyphs; PAGE 2019 with
# `structure` customs, no ReadingOrder, conf at word and line level.
KRAKEN_ALTO = """<?xml version="1.0" encoding="UTF-8"?>
<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#"
      xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <Description>
    <MeasurementUnit>pixel</MeasurementUnit>
    <sourceImageInformation><fileName>0007.png</fileName></sourceImageInformation>
    <Processing ID="OCR_0"><processingCategory>other</processingCategory>
      <processingStepDescription>recognition</processingStepDescription>
      <processingSoftware><softwareName>kraken</softwareName></processingSoftware></Processing>
  </Description>
  <Tags><OtherTag ID="TYPE_1" LABEL="default" TYPE="baselines"/></Tags>
  <Layout>
    <Page ID="page_0" PHYSICAL_IMG_NR="0" WIDTH="400" HEIGHT="240" PROCESSING="OCR_0">
      <PrintSpace HPOS="0" VPOS="0" WIDTH="400" HEIGHT="240">
        <TextBlock ID="textblock_0" HPOS="10" VPOS="20" WIDTH="380" HEIGHT="60">
          <Shape><Polygon POINTS="10 20 390 20 390 80 10 80"/></Shape>
          <TextLine ID="line_0" HPOS="12" VPOS="22" WIDTH="370" HEIGHT="50" TAGREFS="TYPE_1"
                    BASELINE="12 62 200 64 382 61">
            <Shape><Polygon POINTS="12 22 200 24 382 21 382 72 200 74 12 72"/></Shape>
            <String ID="segment_0" CONTENT="Lieber" HPOS="12" VPOS="22" WIDTH="120" HEIGHT="50" WC="0.97">
              <Shape><Polygon POINTS="12 22 132 22 132 72 12 72"/></Shape>
              <Glyph ID="char_0" CONTENT="L" HPOS="12" VPOS="22" WIDTH="20" HEIGHT="50" GC="0.99">
                <Shape><Polygon POINTS="12 22 32 22 32 72 12 72"/></Shape></Glyph>
            </String>
            <SP ID="segment_1" HPOS="132" VPOS="22" WIDTH="18" HEIGHT="50"/>
            <String ID="segment_2" CONTENT="Freund" HPOS="150" VPOS="22" WIDTH="232" HEIGHT="50" WC="0.88">
              <Shape><Polygon POINTS="150 22 382 21 382 72 150 74"/></Shape>
            </String>
          </TextLine>
        </TextBlock>
        <TextBlock ID="textblock_1" HPOS="10" VPOS="120" WIDTH="380" HEIGHT="60">
          <TextLine ID="line_1" HPOS="12" VPOS="122" WIDTH="200" HEIGHT="48" BASELINE="12 160 212 160">
            <Shape><Polygon POINTS="12 122 212 122 212 170 12 170"/></Shape>
            <String ID="segment_3" CONTENT="Gruß" HPOS="12" VPOS="122" WIDTH="200" HEIGHT="48" WC="0.6"/>
          </TextLine>
        </TextBlock>
      </PrintSpace>
    </Page>
  </Layout>
</alto>"""

KRAKEN_PAGE = """<?xml version="1.0" encoding="UTF-8"?>
<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
       xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <Metadata><Creator>kraken</Creator><Created>2024-05-01T10:00:00</Created>
    <LastChange>2024-05-01T10:00:00</LastChange></Metadata>
  <Page imageFilename="0007.png" imageWidth="400" imageHeight="240">
    <TextRegion id="r_0" custom="structure {type:text;}">
      <Coords points="10,20 390,20 390,80 10,80"/>
      <TextLine id="l_0" custom="structure {type:default;}">
        <Coords points="12,22 200,24 382,21 382,72 200,74 12,72"/>
        <Baseline points="12,62 200,64 382,61"/>
        <Word id="w_0"><Coords points="12,22 132,22 132,72 12,72"/>
          <TextEquiv conf="0.97"><Unicode>Lieber</Unicode></TextEquiv></Word>
        <Word id="w_1"><Coords points="150,22 382,21 382,72 150,74"/>
          <TextEquiv conf="0.88"><Unicode>Freund</Unicode></TextEquiv></Word>
        <TextEquiv conf="0.92"><Unicode>Lieber Freund</Unicode></TextEquiv>
      </TextLine>
    </TextRegion>
    <TextRegion id="r_1" custom="structure {type:text;}">
      <Coords points="10,120 390,120 390,180 10,180"/>
      <TextLine id="l_1" custom="structure {type:default;}">
        <Coords points="12,122 212,122 212,170 12,170"/>
        <Baseline points="12,160 212,160"/>
        <TextEquiv conf="0.6"><Unicode>Gruß</Unicode></TextEquiv>
      </TextLine>
    </TextRegion>
  </Page>
</PcGts>"""

SCHEMAS = Path(__file__).resolve().parent / "schemas"


@pytest.mark.parametrize("fmt", ["alto", "page"])
def test_kraken_exports(tmp_path, fmt):
    """Both kraken outputs import to the same lines: many-point baselines and polygons kept whole,
    words (without their glyphs) at word level. The fixtures are valid against the official schemas,
    as kraken's output is."""
    from lxml import etree

    text = KRAKEN_ALTO if fmt == "alto" else KRAKEN_PAGE
    xsd = "alto-4-4.xsd" if fmt == "alto" else "pagecontent-2019-07-15.xsd"
    etree.XMLSchema(etree.parse(str(SCHEMAS / xsd))).assertValid(etree.fromstring(text.encode()))
    (tmp_path / "0007.xml").write_text(text, encoding="utf-8")
    Image.new("L", (400, 240), 255).save(tmp_path / "0007.png")
    (sample,) = convert_xml(tmp_path)
    a, b = sample.annotations
    assert (a.text, b.text) == ("Lieber Freund", "Gruß")
    assert a.baseline == [{"x": 12, "y": 62}, {"x": 200, "y": 64}, {"x": 382, "y": 61}]
    assert len(a.polygon) == 6 and a.polygon[4] == {"x": 200, "y": 74}
    assert b.baseline == [{"x": 12, "y": 160}, {"x": 212, "y": 160}]
    words = convert_xml(tmp_path, tmp_path / "w.jsonl", level="word")[0].annotations
    assert [(w.text, w.line_idx) for w in words] == [("Lieber", 0), ("Freund", 0)] + (
        [("Gruß", 1)] if fmt == "alto" else []  # PAGE: the second line has no Word elements
    )
    assert words[0].polygon == _quad(12, 22, 132, 72)


def test_import_fits_coordinates_to_a_resized_image(tmp_path):
    """An export whose image was downloaded at half size: coordinates follow the image; an image
    of another shape is refused, naming the file."""
    (tmp_path / "0007.xml").write_text(KRAKEN_PAGE, encoding="utf-8")
    Image.new("L", (200, 120), 255).save(tmp_path / "0007.png")
    (sample,) = convert_xml(tmp_path)
    assert sample.annotations[0].baseline == [{"x": 6, "y": 31}, {"x": 100, "y": 32}, {"x": 191, "y": 30.5}]
    assert sample.annotations[1].polygon == _quad(6, 61, 106, 85)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 240x400, shown 400x240: the size the trainers see fits
    Image.new("L", (240, 400), 255).save(tmp_path / "0007.png", exif=exif.tobytes())
    assert convert_xml(tmp_path)[0].annotations[1].polygon == _quad(12, 122, 212, 170)
    Image.new("L", (400, 400), 255).save(tmp_path / "0007.png")
    with pytest.raises(ManifestError, match=r"0007\.xml.*400x240.*400x400"):
        convert_xml(tmp_path)


def test_import_refuses_pages_it_cannot_pair_with_images(tmp_path):
    """A multi-page ALTO names one file for all its pages (our own export of a PDF does): a manifest
    entry is one page image, so it is refused rather than every page drawn on the first. A PDF as
    the 'image' is refused too (the trainers read images)."""
    from batch.core.ids import doc_id_for

    two = _record("letter.png")
    two.pages.append(Page(2, 200, 150, two.pages[0].lines, dpi=300.0))
    (alto,) = render(two, "alto").values()
    (tmp_path / "letter.xml").write_bytes(alto)
    Image.new("RGB", (200, 150)).save(tmp_path / "letter.png")
    with pytest.raises(ManifestError, match="2 pages over one image"):
        convert_xml(tmp_path)
    (tmp_path / "letter.xml").unlink()
    Image.new("RGB", (200, 150)).save(tmp_path / "scan.pdf", resolution=72)
    one = _record("scan.pdf")
    one.doc_id = doc_id_for((tmp_path / "scan.pdf").read_bytes())
    (page,) = render(one, "page").values()
    (tmp_path / "scan.xml").write_bytes(page)
    with pytest.raises(ManifestError, match=r"scan\.pdf: not a page image"):
        convert_xml(tmp_path)
