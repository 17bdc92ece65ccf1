"""`htr bench`'s real-data table: every system on the validation pages of each real training set
(line-level ground truth) next to the dev set, scored by jobs.evaluate like the rest of the bench.
One table per metric, sets as rows, systems as columns.

- Sets: `--real DIR` (default ../shared/data/train: one folder per set with manifest.jsonl); pages:
  those `--real-split` lists for the set (default jobs/splits/validation.txt, `set/image_file`
  lines), the first `--real-limit` N of them. A set with no listed page is left out: all its pages
  are training pages.
- Each set is timed like the others (jobs.bench.time_systems: chunks, systems interleaved, order
  rotated) and scored per system (jobs.bench.system_scores); the "all validation sets" row is the
  micro-average over their pages (jobs.evaluate.Scores.merge: every character and word counts
  once), its pages/s their pages over their seconds. The dev row repeats the dev section's numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from jobs.bench import REPO, Dataset, Report, Timing, md_table, summarise_scores, system_scores, time_systems

REAL_DIR = REPO.parent / "shared" / "data" / "train"
ALL = "all validation sets"
METRICS = [  # (key, table title)
    ("line_det_f1", "Line detection F1 (IoU >= 0.5 against the full GT polygons)"),
    ("crop_cer", "CER on ground-truth line crops (recognition alone, no segmenter)"),
    ("page_cer", "Page CER (end to end, reading order)"),
    ("bow_f1", "Bag-of-words F1 (end to end, order-free; chance: another page's transcription)"),
    ("pages_per_s", "Pages/s (same thread budget, page decoding included)"),
]
SET_NOTES = {
    "timeus": "timeus's polygons are automatic and loose, and the facing page is unannotated: its line "
    "detection F1 says little.",
    "copiste_dun_jour": "copiste_dun_jour's `imp_*` pages carry an unannotated printed consent paragraph: "
    "a system that reads it loses page CER and BoW precision there.",
    "tables_decennales": "tables_decennales's printed headers are unannotated.",
}


def configure_real(p) -> None:
    from jobs.line_data import SPLIT_FILE

    p.add_argument(
        "--real",
        help="folder of real line-level sets (*/manifest.jsonl) for the real-data table "
        f"(default: {REAL_DIR} when present)",
    )
    p.add_argument(
        "--real-split",
        default=str(SPLIT_FILE),
        help="the sets' validation pages (`set/image_file` lines, '#' comments)",
    )
    p.add_argument("--real-limit", type=int, help="first N validation pages of each set (default: all)")
    p.add_argument("--no-real", action="store_true", help="skip the real-data table")


def real_sets(root: Path, split: Path, limit: int | None = None) -> tuple[list[Dataset], list[str]]:
    """The validation pages of each set under `root`, and notes on what was left out."""
    from jobs.evaluate import load_eval_set
    from jobs.line_data import read_page_list
    from jobs.manifests import find_manifests

    listed = read_page_list(split)
    sets, notes = [], []
    for name, manifest in find_manifests([root]).items():
        wanted = listed.get(name)
        if not wanted:
            notes.append(f"{name}: no page listed in {split.name}, left out (training pages only).")
            continue
        pages = load_eval_set(manifest, limit=limit, pages=wanted, set_name=name)
        if limit is None and len(pages) < len(wanted):
            notes.append(f"{name}: {len(wanted) - len(pages)} listed pages are not in its manifest.")
        if pages:
            sets.append(Dataset(name, pages, f"{len(pages)} validation pages"))
    return sets, notes


def run_real(
    sets: list[Dataset], workers: dict[str, Any], chunk: int, warm: bool = True
) -> tuple[dict[str, dict[str, dict]], dict[str, dict[str, Timing]]]:
    """Metrics and timings per set (and ALL, micro-averaged, when there are several), per system."""
    from jobs.evaluate import Scores, summarise

    names = list(workers)
    results: dict[str, dict[str, dict]] = {}
    timings: dict[str, dict[str, Timing]] = {}
    total = {n: Scores() for n in names}
    total_t = {n: Timing() for n in names}
    for k, ds in enumerate(sets):
        timings[ds.name], outputs, _ = time_systems(ds, workers, chunk, warm=warm and k == 0)
        scores = system_scores(ds, workers, outputs)
        results[ds.name] = summarise_scores(ds, scores)
        for n in names:
            total[n].merge(scores[n])
            t = timings[ds.name][n]
            total_t[n] = Timing(
                total_t[n].pages + t.pages,
                total_t[n].seconds + t.seconds,
                max(total_t[n].peak_rss, t.peak_rss),
            )
    if len(sets) > 1:
        every = [p for ds in sets for p in ds.pages]
        results[ALL] = {
            n: {k: v for k, v in summarise(total[n], every).items() if k != "seconds_per_page"} for n in names
        }
        timings[ALL] = total_t
    return results, timings


def real_tables(
    results: dict[str, dict[str, dict]], timings: dict[str, dict[str, Timing]], names: list[str]
) -> list[str]:
    """One markdown table per metric: sets as rows (with their page count), systems as columns."""
    out = []
    for key, title in METRICS:
        chance = key == "bow_f1"
        rows = []
        for set_name, by_system in results.items():
            first = next(iter(by_system.values()))
            if key == "pages_per_s":
                cells = [timings[set_name][n].pages_per_s for n in names]
            else:
                cells = [by_system[n].get(key, "-") for n in names]
            rows.append(
                [set_name, first["pages"], *cells] + ([first.get("bow_f1_chance", "-")] if chance else [])
            )
        out += [
            f"{title}:",
            "",
            md_table(["set", "pages", *names] + (["chance"] if chance else []), rows),
            "",
        ]
    return out


def bench_real(
    args,
    workers: dict[str, Any],
    chunk: int,
    report: Report,
    dev: tuple[dict[str, Timing], dict[str, dict]] | None = None,
    warm: bool = True,
) -> dict[str, Timing] | None:
    """The real-data section of the report; returns the timings over all its validation pages
    (None when there are no sets)."""
    root = Path(args.real) if args.real else REAL_DIR
    if not root.is_dir():
        report.notes.append(f"Real-data table skipped: {root} not found.")
        print(f"htr bench: real-data table skipped: {root} not found", file=sys.stderr)
        return None
    split = Path(args.real_split)
    sets, left_out = real_sets(root, split, args.real_limit)
    if not sets:
        report.notes.append(f"Real-data table skipped: no validation pages of {split} found under {root}.")
        return None
    results, timings = run_real(sets, workers, chunk, warm)
    ours = timings.get(ALL) or timings[sets[0].name]
    if dev is not None:
        timings, results = {"dev": dev[0], **timings}, {"dev": dev[1], **results}
    names = list(workers)
    limit = f", the first {args.real_limit} of each set" if args.real_limit else ""
    try:
        where = split.resolve().relative_to(REPO)
    except ValueError:
        where = split
    text = [
        "## Real data: line-level sets ("
        + ("the dev set and " if dev is not None else "")
        + "the training sets' validation pages)",
        "",
        (
            "The dev set (its section above: stanford_memorials, never trained on) and, per training set, "
            if dev is not None
            else "Per training set, "
        )
        + f"the validation pages listed in `{where}` (whole pages, never trained on){limit}. "
        "Every system is timed like the sets above and scored by the same jobs.evaluate code; texts are "
        "compared after its normalisation (accents folded into the recogniser's alphabet for the "
        "prediction and the reference alike). The training sets are French; Tesseract reads with `eng`.",
        "",
    ]
    text += [f"- {n}" for n in [*(SET_NOTES[s.name] for s in sets if s.name in SET_NOTES), *left_out]]
    text += [""] if text[-1] != "" else []
    tables = real_tables(results, timings, names)
    print("\n" + "\n".join(tables))
    report.sections += text + tables
    return ours
