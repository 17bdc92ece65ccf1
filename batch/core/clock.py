"""The stage-timing hook (bottom layer: stdlib only, imported by the runners, the pipeline and jobs).

The predictor names its stages as it runs them: `with clock.stage("seg_model", sync=True): ...`.
By default the clock is NO_CLOCK and times nothing; `htr bench` and `bench-gpu` hand the pipeline
a StageClock (`Pipeline.load(..., clock=...)` or `pipe.clock = ...`) and read its seconds. The
stage names are listed, with what each covers, in jobs/bench_stages.py (STAGES, STAGE_NOTES).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol


class Clock(Protocol):
    """Anything that can time a named stage. sync: the stage ran device work (a model forward); a
    clock that measures a GPU waits for it before reading the time."""

    def stage(self, name: str, sync: bool = False) -> AbstractContextManager[Any]: ...


_NOTHING = contextlib.nullcontext()  # reusable: entering it does nothing


class NoClock:
    """The default: every stage is free of timing code but a no-op context manager."""

    def stage(self, name: str, sync: bool = False) -> AbstractContextManager[Any]:
        return _NOTHING


NO_CLOCK = NoClock()


@dataclass
class StageClock:
    """Seconds spent per named stage, summed over calls (thread-safe: decode threads time stages too)."""

    sync: Callable[[], None] | None = None  # e.g. torch.cuda.synchronize for device work
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    enabled: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)

    @contextlib.contextmanager
    def stage(self, name: str, sync: bool = False) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            if self.enabled:
                if sync and self.sync:
                    self.sync()
                with self.lock:
                    self.seconds[name] += time.perf_counter() - t

    def wrap(self, fn: Callable, name: str, sync: bool = False) -> Callable:
        """fn, timed as stage `name` on every call (for code outside the pipeline: decoding, writing)."""

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name, sync):
                return fn(*args, **kwargs)

        return timed

    def reset(self) -> None:
        self.seconds = defaultdict(float)
