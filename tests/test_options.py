"""One set of decoding and pipeline flags (batch.options) for `htr run`, `eval`, `serve` and `bench`:
the same names, defaults and help everywhere, read into the same options. Parsing only: no
model is loaded and no server started."""

from __future__ import annotations

import argparse

import pytest

from batch import cli, options, serve
from batch.options import DecodeOptions, PipelineOptions
from batch.pipeline import PipelineConfig
from transforms.rasterise import DEFAULT_IMAGE_SIDE, Limits

# each command with the arguments it requires
COMMANDS = {
    "run": ["in/", "out/"],
    "eval": ["--manifest", "set/manifest.jsonl"],
    "serve": [],
    "bench": [],
}
SHARED = [
    "--backend", "onnxruntime", "--precision", "fp32", "--image-side", "2000",
    "--dpi", "150", "--max-pixels", "9000000", "--max-pages", "12",
    "--models", "some/models", "--device", "cpu", "--seg-batch", "2", "--rec-batch", "64",
    "--long-side", "768", "--lexicon", "fr", "--no-page-fixes",
]  # fmt: skip


def parse(command: str, flags: list[str]) -> argparse.Namespace:
    argv = [command, *COMMANDS[command], *flags]
    return cli.build_parser(argv).parse_args(argv)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_reads_the_shared_flags_into_the_same_options(command):
    decode, predictor = options.from_args(parse(command, SHARED))
    assert decode == DecodeOptions(dpi=150, image_side=2000, max_pixels=9_000_000, max_pages=12)
    assert decode.limits() == Limits(max_pixels=9_000_000, max_pages=12)
    assert predictor == PipelineOptions(
        "some/models",
        "cpu",
        PipelineConfig(
            seg_batch=2,
            rec_batch=64,
            long_side=768,
            lexicon="fr",
            backend="onnxruntime",
            precision="fp32",
            image_side=2000,
            fix_pages=False,
        ),
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_the_same_defaults_as_the_pipeline(command):
    decode, predictor = options.from_args(parse(command, []))
    assert decode == DecodeOptions(dpi=200, image_side=DEFAULT_IMAGE_SIDE, max_pixels=Limits.max_pixels)
    assert decode.limits() == Limits()  # htr run's limits when no flag is given
    assert predictor == PipelineOptions(None, "auto", PipelineConfig())


def test_no_lexicon_is_lexicon_off_everywhere():
    for command in COMMANDS:
        assert PipelineOptions.from_args(parse(command, ["--no-lexicon"])).config.lexicon == "off"


def test_the_commands_share_one_help_text_per_flag():
    """Same flag, same help, same default on every command (one helper adds them all)."""

    def shared_actions(command: str) -> dict[str, tuple]:
        parser = cli.build_parser([command])
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return {
            a.option_strings[0]: (a.help, a.default, a.choices)
            for a in sub.choices[command]._actions
            if a.option_strings and a.option_strings[0] in SHARED + ["--no-lexicon"]
        }

    run = shared_actions("run")
    assert len(run) == 14
    for command in COMMANDS:
        assert shared_actions(command) == run, command


def test_serve_help_lists_the_shared_flags(capsys):
    assert cli.main(["serve", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in (
        "--backend",
        "--precision",
        "--image-side",
        "--seg-batch",
        "--rec-batch",
        "--dpi",
        "--max-pages",
    ):
        assert flag in text, flag
    assert "onnxruntime" in text


def test_argv_gives_the_same_options_back_to_htr_run():
    """The bench hands its flags to its `htr run` subprocesses through options.argv."""
    given = options.from_args(parse("bench", SHARED))
    assert options.from_args(parse("run", options.argv(*given))) == given
    assert options.argv(*options.from_args(parse("bench", []))) == []  # defaults: no flags


def test_serve_settings_take_the_decoding_flags_and_keep_the_environment():
    args = parse("serve", ["--dpi", "300", "--max-pixels", "1000000"])
    settings = serve.settings_from_args(args, env={"HTR_SERVE_MAX_PAGES": "40"})
    assert (settings.dpi, settings.max_pixels, settings.max_pages) == (300, 1_000_000, 40)
    assert serve.settings_from_args(parse("serve", []), env={}).max_pages == 500
    flagged = serve.settings_from_args(
        parse("serve", ["--max-pages", "7"]), env={"HTR_SERVE_MAX_PAGES": "40"}
    )
    assert flagged.max_pages == 7
