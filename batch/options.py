"""The options every predicting command shares (pipeline layer): `htr run`, `eval`, `serve` and
`bench` take the same decoding and pipeline flags, with the same defaults and help, from here.

  DecodeOptions    how a document becomes pages: --dpi, --image-side, --max-pixels, --max-pages
  PipelineOptions  which predictor: --models, --device, and the batch.pipeline.PipelineConfig
                   flags --backend, --precision, --seg-batch, --rec-batch, --long-side,
                   --lexicon/--no-lexicon, --no-page-fixes

Each has one `add_arguments(parser)` and one `from_args(args)`. A command adds both, then reads
both; its own flags (output folder, port, report file, ...) stay in its module.

batch.pipeline (cv2, the models package) is imported only when a config is built, so `htr serve`
answers /ping before it pays for that import.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from transforms.rasterise import DEFAULT_IMAGE_SIDE, Limits

if TYPE_CHECKING:
    from batch.core.clock import Clock
    from batch.pipeline import Pipeline, PipelineConfig

BACKENDS = ("auto", "torch", "onnxruntime")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class DecodeOptions:
    """Decoding: PDF resolution, reduced decoding of large JPEGs, and the per-document limits."""

    dpi: int = 200
    image_side: int = DEFAULT_IMAGE_SIDE
    max_pixels: int = Limits.max_pixels
    max_pages: int | None = None  # None: the command's own (htr run: Limits.max_pages; serve: its setting)

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("decoding (shared by run, eval, serve and bench)")
        g.add_argument("--dpi", type=int, default=200, help="PDF rasterising resolution")
        g.add_argument(
            "--image-side",
            type=int,
            default=DEFAULT_IMAGE_SIDE,
            help="JPEGs at least twice this on the long side are decoded at 1/2, 1/4 or 1/8 size, "
            "not below it (coordinates stay in source pixels); 0: always full size",
        )
        g.add_argument("--max-pixels", type=int, default=Limits.max_pixels, help="per page")
        g.add_argument(
            "--max-pages",
            type=int,
            default=None,
            help=f"per document (default: {Limits.max_pages}; htr serve: HTR_SERVE_MAX_PAGES or 500)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DecodeOptions:
        return cls(
            dpi=args.dpi, image_side=args.image_side, max_pixels=args.max_pixels, max_pages=args.max_pages
        )

    def argv(self) -> list[str]:
        """The flags that give these options (those off their default), for an `htr run` subprocess."""
        default, out = DecodeOptions(), []
        for flag, value, was in (
            ("--dpi", self.dpi, default.dpi),
            ("--image-side", self.image_side, default.image_side),
            ("--max-pixels", self.max_pixels, default.max_pixels),
            ("--max-pages", self.max_pages, default.max_pages),
        ):
            out += [flag, str(value)] if value != was else []
        return out

    def limits(self, max_pages: int = Limits.max_pages) -> Limits:
        """The limits to decode with; `max_pages`: the command's default when --max-pages is not given."""
        return Limits(
            max_pixels=self.max_pixels, max_pages=max_pages if self.max_pages is None else self.max_pages
        )


@dataclass(frozen=True)
class PipelineOptions:
    """The predictor to load: model folder, device, and its PipelineConfig (engine, precision,
    batch sizes, segmenter input size, lexicon, page fixes; image_side from DecodeOptions)."""

    models: str | None = None
    device: str = "auto"
    config: PipelineConfig = field(default_factory=lambda: _config())

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("pipeline (shared by run, eval, serve and bench)")
        g.add_argument("--models", help="model folder (default: the shipped models/default)")
        g.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
        g.add_argument(
            "--backend",
            choices=BACKENDS,
            default="auto",
            help="CPU inference engine (auto: torch where the CPU has native bf16, else onnxruntime)",
        )
        g.add_argument(
            "--precision",
            choices=PRECISIONS,
            default="auto",
            help="auto: bf16 on CPUs with AVX512-BF16/AMX and on CUDA, fp32 otherwise",
        )
        g.add_argument("--seg-batch", type=int, default=4, help="pages per segmenter batch")
        g.add_argument("--rec-batch", type=int, default=256, help="word crops per recogniser batch")
        g.add_argument("--long-side", type=int, help="segmenter input size (default: the checkpoint's)")
        g.add_argument(
            "--lexicon",
            default="auto",
            help="dictionary rescoring: auto (per line, English or French, whichever knows the "
            "line's words; none otherwise), a language code (en, fr, de, ...) or off",
        )
        g.add_argument(
            "--no-lexicon", action="store_true", help="same as --lexicon off (the raw recogniser readings)"
        )
        g.add_argument(
            "--no-page-fixes",
            action="store_true",
            help="read pages as they are: no negative/rotation/skew correction, no upside-down retry",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PipelineOptions:
        """Also reads --image-side (DecodeOptions' flag) into the config, where the pipeline reads it."""
        config = _config(
            seg_batch=args.seg_batch,
            rec_batch=args.rec_batch,
            long_side=args.long_side,
            lexicon="off" if args.no_lexicon else args.lexicon,
            backend=args.backend,
            precision=args.precision,
            fix_pages=not args.no_page_fixes,
        )
        if getattr(args, "image_side", None) is not None:
            config = replace(config, image_side=args.image_side)
        return cls(models=args.models, device=args.device, config=config)

    def argv(self) -> list[str]:
        """The flags that give these options (those off their default; image_side is
        DecodeOptions'), for an `htr run` subprocess."""
        c, d = self.config, _config()
        out = ["--models", self.models] if self.models else []
        out += ["--device", self.device] if self.device != "auto" else []
        for flag, value, was in (
            ("--backend", c.backend, d.backend),
            ("--precision", c.precision, d.precision),
            ("--seg-batch", c.seg_batch, d.seg_batch),
            ("--rec-batch", c.rec_batch, d.rec_batch),
            ("--long-side", c.long_side, d.long_side),
            ("--lexicon", c.lexicon, d.lexicon),
        ):
            out += [flag, str(value)] if value != was else []
        return out + ([] if c.fix_pages else ["--no-page-fixes"])

    def load(self, *, clock: Clock | None = None) -> Pipeline:
        from batch.core.clock import NO_CLOCK
        from batch.pipeline import Pipeline

        return Pipeline.load(self.models, self.device, self.config, clock=clock or NO_CLOCK)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Both groups: what `run`, `eval`, `serve` and `bench` call."""
    DecodeOptions.add_arguments(parser)
    PipelineOptions.add_arguments(parser)


def from_args(args: argparse.Namespace) -> tuple[DecodeOptions, PipelineOptions]:
    return DecodeOptions.from_args(args), PipelineOptions.from_args(args)


def argv(decode: DecodeOptions, predictor: PipelineOptions) -> list[str]:
    """`htr run` flags for both (the bench's end-to-end and memory runs)."""
    return predictor.argv() + decode.argv()


def _config(**values: Any) -> PipelineConfig:
    from batch.pipeline import PipelineConfig

    return PipelineConfig(**values)
