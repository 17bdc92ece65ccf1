"""Labelled-data formats: our manifest, GNHK, Ground Truth, splits."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from batch.errors import InputError
from jobs.manifests import (Annotation, ManifestError, Sample, convert_ground_truth, convert_gnhk,
                            ground_truth_sample, input_manifest, is_recognition_target,
                            label_category_config, labeling_job_request, read_manifest,
                            resolve_source, samples_to_gnhk, split_manifest, to_ground_truth_line,
                            write_manifest)


def _quad(x0, y0, x1, y1):
    return [{"x": x0, "y": y0}, {"x": x1, "y": y0}, {"x": x1, "y": y1}, {"x": x0, "y": y1}]


SAMPLES = [
    Sample("pages/a.jpg", [Annotation("Dear", _quad(10, 20, 60, 40), 0, "H"),
                           Annotation("£12.50", _quad(70, 20, 130, 42), 0, "H"),
                           Annotation("%SC%", _quad(10, 60, 50, 80), 1, "H"),
                           Annotation("ACME", _quad(5, 1, 55, 15), 2, "P")]),
    Sample("/abs/b.png", []),
    Sample("s3://bucket/c.tif", [Annotation("é", _quad(1, 1, 5, 5))]),
]


def test_manifest_round_trip(tmp_path):
    path = write_manifest(SAMPLES, tmp_path / "sub" / "manifest.jsonl")
    assert read_manifest(path) == SAMPLES
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert first["annotations"]["texts"][0] == {"text": "Dear", "polygon": _quad(10, 20, 60, 40),
                                                "line_idx": 0, "type": "H"}


def test_resolve_source(tmp_path):
    m = tmp_path / "m.jsonl"
    assert resolve_source(SAMPLES[0], m) == str(tmp_path / "pages/a.jpg")
    assert resolve_source(SAMPLES[1], m) == "/abs/b.png"
    assert resolve_source(SAMPLES[2], m) == "s3://bucket/c.tif"
    assert resolve_source(SAMPLES[0], "s3://bkt/data/m.jsonl") == "s3://bkt/data/pages/a.jpg"


@pytest.mark.parametrize("line, words", [
    ("not json", "not JSON"),
    ('{"annotations": {"texts": []}}', "source-ref"),
    ('{"source-ref": "a.jpg", "annotations": {"texts": [{"text": "x"}]}}', "polygon"),
    ('{"source-ref": "a.jpg", "annotations": {"texts": [{"text": "x", "polygon": [{"x": 1}, {"x": 2}, {"x": 3}]}]}}',
     "bad polygon point"),
    ('{"source-ref": "a.jpg", "annotations": {"texts": [{"text": "x", "polygon": [[0, 0], [1, 0], [1, 1]], '
     '"type": "Z"}]}}', "type"),
])
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
        s.source_ref for s in samples}
    assert not {s.source_ref for s in train} & {s.source_ref for s in test}
    assert len(split_manifest(samples[:2], 0.1)[1]) == 1
    with pytest.raises(ValueError):
        split_manifest(samples, 1.5)


def test_gnhk_conversion(tmp_path):
    root = tmp_path / "gnhk"
    (root / "train").mkdir(parents=True)
    Image.new("RGB", (200, 100), "white").save(root / "train" / "eng_1.jpg")
    words = [{"text": "hello", "polygon": {"x0": 1, "y0": 2, "x1": 50, "y1": 2, "x2": 50, "y2": 20, "x3": 1, "y3": 20},
              "line_idx": 0, "type": "H"},
             {"text": "%math%", "polygon": {"x0": 60, "y0": 2, "x1": 90, "y1": 3, "x2": 90, "y2": 21, "x3": 60, "y3": 20},
              "line_idx": 0, "type": "H"}]
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
    sample = Sample("s3://b/p.jpg", [Annotation("Dear", _quad(10, 20, 60, 40)), Annotation("Sir,", _quad(70, 20, 110, 41))])
    line = to_ground_truth_line(sample, "words", image_size=(200, 100))
    assert line["words"]["annotations"][0] == {"class_id": 0, "left": 10, "top": 20, "width": 50, "height": 20}
    p = tmp_path / "output.manifest"
    p.write_text(json.dumps(line) + "\n")
    back = convert_ground_truth(p, tmp_path / "manifest.jsonl")
    assert back == [sample] and read_manifest(tmp_path / "manifest.jsonl") == [sample]


def test_ground_truth_polygons_and_transcriptions():
    polygon_task = {
        "source-ref": "s3://b/p.jpg",
        "lines": {"annotations": [{"class_id": 0, "vertices": [{"x": 1, "y": 1}, {"x": 9, "y": 1},
                                                                 {"x": 9, "y": 5}, {"x": 1, "y": 5}],
                                   "label-category-attributes": {"transcription": "hi!"}}],
                  "image_size": [{"width": 10, "height": 6, "depth": 3}]},
        "lines-metadata": {"class-map": {"0": "word"}, "type": "groundtruth/polygon"}}
    s = ground_truth_sample(polygon_task)
    assert s.annotations[0].text == "hi!" and len(s.annotations[0].polygon) == 4
    crowd = {"source-ref": "s3://b/q.jpg",
             "label": {"annotatedResult": {"inputImageProperties": {"width": 10, "height": 10},
                                           "polygons": [{"label": "word", "vertices": [[0, 0], [4, 0], [4, 4]]}]}},
             "label-metadata": {"type": "groundtruth/custom"}}
    s = ground_truth_sample(crowd)
    assert s.annotations[0].text == "word" and s.annotations[0].polygon[2] == {"x": 4.0, "y": 4.0}
    # a custom crowd-polygon job without consolidation: each worker's form output as a JSON string
    # (shape from the Ground Truth developer guide: crowd-polygon element output, custom job output)
    form = {"annotatedResult": {"inputImageProperties": {"height": 853, "width": 1280}, "polygons": [
        {"label": "Dear", "vertices": [{"x": 570, "y": 239}, {"x": 603, "y": 239}, {"x": 603, "y": 260}]}]}}
    custom = {"source-ref": "s3://b/c.jpg",
              "words": {"annotationsFromAllWorkers": [
                  {"workerId": "private.eu-west-1.1", "annotationData": {"content": json.dumps(form)}},
                  {"workerId": "private.eu-west-1.2", "annotationData": {"content": "{}"}}]},
              "words-metadata": {"type": "groundtruth/custom", "job-name": "w", "human-annotated": "yes"}}
    s = ground_truth_sample(custom)
    assert [a.text for a in s.annotations] == ["Dear"] and s.annotations[0].polygon[0] == {"x": 570.0, "y": 239.0}
    custom["words"]["annotationsFromAllWorkers"][0]["annotationData"]["content"] = "{not json"
    with pytest.raises(ManifestError, match="annotationsFromAllWorkers"):
        ground_truth_sample(custom)
    with pytest.raises(ManifestError, match="label attribute"):
        ground_truth_sample({"source-ref": "s3://b/r.jpg"})
    with pytest.raises(ManifestError, match="neither a box nor"):
        ground_truth_sample({"source-ref": "s3://b/r.jpg", "x": {"annotations": [{"class_id": 0}]},
                             "x-metadata": {}})


def test_labeling_job_request_is_a_complete_pure_request():
    req = labeling_job_request("htr-words-1", "s3://b/in.manifest", "s3://b/out/", "arn:aws:iam::1:role/r",
                               "arn:aws:sagemaker:eu-west-1:1:workteam/private-crowd/t", "s3://b/labels.json",
                               "s3://b/ui.liquid", region="eu-west-1")
    htc = req["HumanTaskConfig"]
    assert req["LabelAttributeName"] == "words"
    assert htc["PreHumanTaskLambdaArn"] == "arn:aws:lambda:eu-west-1:568282634449:function:PRE-BoundingBox"
    assert htc["AnnotationConsolidationConfig"]["AnnotationConsolidationLambdaArn"].endswith("ACS-BoundingBox")
    assert req["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"] == "s3://b/in.manifest"
    seg = labeling_job_request("j", "s3://b/i", "s3://b/o", "r", "w", "s3://b/l", "s3://b/u", "us-east-1",
                               task="SemanticSegmentation")
    assert seg["LabelAttributeName"].endswith("-ref")
    with pytest.raises(ValueError, match="region"):
        labeling_job_request("j", "s3://b/i", "s3://b/o", "r", "w", "s3://b/l", "s3://b/u", "mars-1")
    with pytest.raises(ValueError, match="s3://"):
        labeling_job_request("j", "/local", "s3://b/o", "r", "w", "s3://b/l", "s3://b/u", "us-east-1")
    assert input_manifest(["s3://b/1.jpg"]) == '{"source-ref": "s3://b/1.jpg"}\n'
    with pytest.raises(ManifestError):
        input_manifest(["/tmp/1.jpg"])
    assert label_category_config(["word"])["labels"] == [{"label": "word"}]
