"""NLU benchmark: train time, model load time, parse p50/p95 and peak RSS. Prints figures only.

Run: .venv/bin/python bench/nlu.py [--locale zh]
Targets (issue 4): parse p95 <= 1 ms, load <= 1 s, <= 100 MB.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dialogs.nlu import load_examples
from dialogs.nlu.model import IntentModel
from dialogs.nlu.parser import ClassifierParser
from tanfang.nlu import DEFAULT_NLU_DATA, load_or_train


def serve(model_path: Path, locale: str, rounds: int) -> None:
    """Serving-side figures in a fresh process (no scikit-learn): load, parse latency, peak RSS."""
    t0 = time.perf_counter()
    loaded = IntentModel.from_bytes(model_path.read_bytes())
    load_s = time.perf_counter() - t0
    parser = ClassifierParser({locale: loaded}, threshold=0.25)
    texts = [e.text for e in load_examples(DEFAULT_NLU_DATA / locale / "test.yml")]
    for t in texts[:50]:
        parser.parse(t, locale)  # warm-up
    samples = []
    for _ in range(rounds):
        for t in texts:
            s = time.perf_counter()
            parser.parse(t, locale)
            samples.append((time.perf_counter() - s) * 1000)
    samples.sort()
    p50 = statistics.median(samples)
    p95 = samples[int(0.95 * len(samples)) - 1]
    print(f"model_kb={model_path.stat().st_size / 1024:.0f}")
    print(f"load_ms={load_s * 1000:.1f}")
    print(f"parse_p50_ms={p50:.3f} parse_p95_ms={p95:.3f} (n={len(samples)})")
    print(f"serving_peak_rss_mb={_peak_rss_mb():.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--locale", default="zh", choices=["zh", "ko"])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.locale, args.rounds)
        return
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        t0 = time.perf_counter()
        model, _ = load_or_train(args.locale, DEFAULT_NLU_DATA, models, force=True)
        train_s = time.perf_counter() - t0
        print(f"locale={args.locale} features={len(model.vocabulary)}")
        print(f"train_s={train_s:.2f}")
        print(f"training_peak_rss_mb={_peak_rss_mb():.1f}")
        blob = next(models.glob("*.npz"))
        subprocess.run([sys.executable, __file__, "--locale", args.locale, "--rounds", str(args.rounds),
                        "--serve", str(blob)], check=True)


def _peak_rss_mb() -> float:
    """VmHWM of this process image (getrusage's maxrss would carry the parent's peak over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


if __name__ == "__main__":
    main()
