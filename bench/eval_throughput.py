"""Benchmark: eval throughput (examples/s) with batched generation against one example at a time.

One run evaluates the same model (the tiny base model of `llmops_workers.tiny.build_tiny_model`,
default recipe, no adapter), on the same rows (the first `--limit` rows of
config/datasets/demo-eval.test.jsonl, the three tasks mixed as in the file) with the same settings
(greedy, `--max-new-tokens`, `--threads` torch threads) at each of `--batch-sizes`; batch size 1
is one example at a time.

Each run is a fresh Python process (this file with `--child`) that calls the engine's entry point,
`llmops_workers.evaluation.run_eval(EvalSpec(...), events)`, as a worker's eval child does: first a
warm-up run of the first 4 rows (all three tasks: it pays the engine's lazy imports, rouge-score's
and nltk's included, and the first calls of `generate`), then the measured run. The times are the
engine's own, from the measured run's summary.json: `eval_seconds` starts once the model is loaded
and ends after the last batch, before the report is written; it covers generation, the
teacher-forced forward for each reference's loss (batched by the same batch size) and scoring.
examples/s is examples / `eval_seconds`. Imports and model loading (`load_seconds`) are outside.
Runs are interleaved (every repeat goes through every batch size, in an order rotated by one per
repeat), so a slow minute of a shared machine hits every batch size alike; the table gives medians.

The base model, not a tuned adapter, on purpose: it rarely emits EOS on these prompts, so nearly
every example generates the full `--max-new-tokens` and every batch size does the same generation
work, an upper bound for answers of that length. A tuned model stops at EOS, and a batch runs until
its longest answer ends, which favours batch size 1; the output says how many answers (re-encoded
with the model's tokenizer) are shorter than `--max-new-tokens`. Greedy answers must not depend on
the batch size (docs/evaluation.md): every run's predictions (examples.jsonl) are compared with
the first run's at the smallest batch size, and the differences counted (exit status 1 if any).

    .venv/bin/python bench/eval_throughput.py --quick    # smoke run: 24 rows, batch 1 and 8, once
    .venv/bin/python bench/eval_throughput.py [--limit 96] [--batch-sizes 1,8,16,32] \
        [--max-new-tokens 32] [--repeats 3] [--threads 1] [--model-dir DIR] [--json OUT]

Building the tiny model takes about 1.5 min; `--model-dir DIR` reuses one (built there if missing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EVAL_FILE = REPO / "config" / "datasets" / "demo-eval.test.jsonl"
WARMUP_ROWS = 4  # the file's first 4 rows hold all three tasks


@dataclass
class Run:
    """One measured run_eval at one batch size."""

    batch_size: int
    repeat: int
    examples: int
    eval_seconds: float
    load_seconds: float
    examples_per_second: float
    differences: int  # examples whose prediction differs from the reference run's


@dataclass
class Row:
    """The medians of one batch size over the repeats."""

    batch_size: int
    examples_per_second: float
    eval_seconds: float
    ratio: float
    examples_per_second_runs: list[float]


class QuietEvents:
    """EvalEvents that record nothing and never cancel."""

    def on_start(self, total: int) -> None: ...

    def on_progress(self, done: int, total: int, metrics: dict[str, float]) -> None: ...

    def should_stop(self) -> bool:
        return False


def child(args: argparse.Namespace) -> int:
    """The body of one run's process: a warm-up run_eval, then the measured one into --child."""
    from llmops_workers.evaluation import EvalSpec, run_eval

    out = Path(args.child)
    for limit, output_dir in ((WARMUP_ROWS, out / "warmup"), (args.limit, out / "measured")):
        spec = EvalSpec(
            model_dir=args.model_dir,
            adapter_dir=None,
            eval_file=EVAL_FILE,
            output_dir=output_dir,
            max_new_tokens=args.max_new_tokens,
            temperature=0.0,
            batch_size=args.child_batch_size,
            limit=limit,
            threads=args.threads,
        )
        output_dir.mkdir(parents=True)
        run_eval(spec, QuietEvents())
    return 0


def measure(args: argparse.Namespace, workdir: Path, batch_size: int, repeat: int) -> Path:
    """Runs one child process; returns the directory of its measured report."""
    out = workdir / f"b{batch_size}-r{repeat}"
    command = [sys.executable, __file__, "--child", str(out), "--child-batch-size", str(batch_size)]
    command += ["--model-dir", str(args.model_dir), "--limit", str(args.limit)]
    command += ["--max-new-tokens", str(args.max_new_tokens), "--threads", str(args.threads)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        sys.exit(f"batch size {batch_size} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return out / "measured"


def predictions(report: Path) -> dict[int, str]:
    lines = (report / "examples.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return {int(row["index"]): str(row["prediction"]) for row in rows}


def short_answers(model_dir: Path, answers: Sequence[str], max_new_tokens: int) -> int:
    """How many answers re-encode to fewer tokens than max_new_tokens (they met EOS first)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    lengths = [len(tokenizer.encode(a, add_special_tokens=False).ids) for a in answers]
    return sum(1 for length in lengths if length < max_new_tokens)


def summarize(runs: list[Run], batch_sizes: list[int]) -> list[Row]:
    rows: list[Row] = []
    for batch_size in batch_sizes:
        mine = [r for r in runs if r.batch_size == batch_size]
        speed = statistics.median(r.examples_per_second for r in mine)
        ratio = speed / rows[0].examples_per_second if rows else 1.0
        seconds = statistics.median(r.eval_seconds for r in mine)
        each = [round(r.examples_per_second, 2) for r in mine]
        rows.append(Row(batch_size, speed, seconds, ratio, each))
    return rows


def table(rows: list[Row]) -> str:
    first = rows[0].batch_size
    lines = [
        f"| batch size | examples/s | eval s | ratio to batch {first} | examples/s of each run |",
        "|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        each = ", ".join(f"{value:.2f}" for value in row.examples_per_second_runs)
        lines.append(
            f"| {row.batch_size} | {row.examples_per_second:.2f} | {row.eval_seconds:.1f} "
            f"| {row.ratio:.2f} | {each} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Eval throughput: batched against one at a time.")
    parser.add_argument("--limit", type=int, default=96, help="rows of demo-eval.test (96)")
    parser.add_argument("--batch-sizes", default="1,8,16,32", help="comma-separated (1,8,16,32)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="runs per batch size; medians")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run (1)")
    parser.add_argument("--model-dir", type=Path, help="the tiny model (built there if missing)")
    parser.add_argument("--json", metavar="OUT", default="", help="write runs and medians here")
    parser.add_argument("--quick", action="store_true", help="smoke run: 24 rows, 1,8, 1 repeat")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--child-batch-size", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.limit, args.batch_sizes, args.repeats = 24, "1,8", 1
    args.sizes = sorted({int(size) for size in args.batch_sizes.split(",") if size.strip()})
    if not args.sizes or min(args.sizes) < 1 or args.limit < 1 or args.repeats < 1:
        parser.error("batch sizes, --limit and --repeats must be positive")
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    with tempfile.TemporaryDirectory(prefix="llmops-eval-bench-") as temporary:
        workdir = Path(temporary)
        if args.model_dir is None:
            args.model_dir = workdir / "tiny"
        if not (args.model_dir / "config.json").exists():
            from llmops_workers.tiny import build_tiny_model

            print(f"building the tiny model in {args.model_dir} (1.5 min)", file=sys.stderr)
            build_tiny_model(args.model_dir, threads=args.threads)
        load_before = os.getloadavg()
        started = time.monotonic()
        runs: list[Run] = []
        reference: dict[int, str] = {}
        answers: list[str] = []
        for repeat in range(1, args.repeats + 1):
            shift = (repeat - 1) % len(args.sizes)
            for batch_size in args.sizes[shift:] + args.sizes[:shift]:
                report = measure(args, workdir, batch_size, repeat)
                summary = json.loads((report / "summary.json").read_text())
                predicted = predictions(report)
                if not reference:
                    reference = predicted
                    answers = list(predicted.values())
                indices = reference.keys() | predicted.keys()
                run = Run(
                    batch_size=batch_size,
                    repeat=repeat,
                    examples=int(summary["examples"]),
                    eval_seconds=float(summary["eval_seconds"]),
                    load_seconds=float(summary["load_seconds"]),
                    examples_per_second=float(summary["examples_per_second"]),
                    differences=sum(1 for i in indices if reference.get(i) != predicted.get(i)),
                )
                runs.append(run)
                print(
                    f"[{repeat}/{args.repeats}] batch {batch_size}: "
                    f"{run.examples_per_second:.2f} examples/s, eval {run.eval_seconds:.1f} s, "
                    f"load {run.load_seconds:.1f} s, {run.differences} differing predictions",
                    file=sys.stderr,
                    flush=True,
                )
        short = short_answers(args.model_dir, answers, args.max_new_tokens)
    rows = summarize(runs, args.sizes)
    versions = {name: metadata.version(name) for name in ("torch", "transformers")}
    git = ["git", "rev-parse", "--short", "HEAD"]
    commit = subprocess.run(git, cwd=REPO, capture_output=True, text=True).stdout.strip()
    context = {
        "commit": commit or "unknown",
        "cpu_cores": os.cpu_count(),
        "python": platform.python_version(),
        **versions,
        **{key: getattr(args, key) for key in ("limit", "max_new_tokens", "threads", "repeats")},
        "load_average_before": load_before[0],
        "load_average_after": os.getloadavg()[0],
        "total_seconds": round(time.monotonic() - started, 1),
        "answers_shorter_than_max_new_tokens": short,
    }
    print(
        f"commit {context['commit']}, {context['cpu_cores']} cores, Python {context['python']}, "
        f"torch {versions['torch']}, transformers {versions['transformers']}; tiny base model, "
        f"{runs[0].examples} rows of demo-eval.test, greedy, {args.max_new_tokens} new tokens, "
        f"{args.threads} torch thread(s); medians of {args.repeats} interleaved run(s)"
    )
    print(
        f"load average (1 min) before {load_before[0]:.2f}, "
        f"after {context['load_average_after']:.2f}"
    )
    print()
    print(table(rows))
    print()
    total = sum(r.differences for r in runs)
    verdict = "identical" if total == 0 else f"DIFFERENT in {total} example-runs"
    print(
        f"Predictions: {verdict} across batch sizes ({len(runs)} runs x {runs[0].examples} "
        f"examples compared with the first batch-{args.sizes[0]} run); "
        f"{short} of {len(answers)} answers shorter than {args.max_new_tokens} tokens "
        "(stopped at EOS)."
    )
    if args.json:
        document = {"context": context, "rows": [asdict(r) for r in rows]}
        document["runs"] = [asdict(r) for r in runs]
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
