"""Prompt rendering: espeak-ng render time per prompt (cold), disk-cache hit and memory hit.
Prints figures; asserts nothing.  Run: .venv/bin/python bench/tts.py
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from ivr.tts import PromptCache
from storage.enums import Locale

PROMPTS = [
    ("您好，这里是探访关爱服务，我们是社区的工作人员。", Locale.ZH),
    ("请问您最近身体怎么样？好请按1，不好请按2。", Locale.ZH),
    ("如果需要帮助，请按3，我们马上安排人员上门。", Locale.ZH),
    ("안녕하세요. 요즘 몸은 괜찮으세요?", Locale.KO),
    ("괜찮으시면 1번, 아니면 2번을 눌러 주세요.", Locale.KO),
]


async def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        cache = PromptCache(Path(d))
        cold, disk, mem, audio = [], [], [], []
        for i in range(3):  # three rates → three distinct prompts per text
            for text, loc in PROMPTS:
                t0 = time.perf_counter()
                pcm = await cache.render(text, loc, rate=120 + 10 * i)
                cold.append(time.perf_counter() - t0)
                audio.append(len(pcm) / 16000)
        fresh = PromptCache(Path(d))
        for i in range(3):
            for text, loc in PROMPTS:
                t0 = time.perf_counter()
                await fresh.render(text, loc, rate=120 + 10 * i)
                disk.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                await fresh.render(text, loc, rate=120 + 10 * i)
                mem.append(time.perf_counter() - t0)
        print(f"prompts: {len(cold)}, mean audio {statistics.mean(audio):.1f} s each")
        print(f"cold render (espeak-ng + shaping): median {statistics.median(cold) * 1000:.0f} ms,"
              f" max {max(cold) * 1000:.0f} ms, {statistics.mean(cold) / statistics.mean(audio):.3f} s per audio s")
        print(f"disk cache hit: median {statistics.median(disk) * 1000:.2f} ms")
        print(f"memory cache hit: median {statistics.median(mem) * 1e6:.1f} µs")
        t0 = time.perf_counter()
        other = PromptCache(Path(d) / "all")
        await asyncio.gather(*(other.render(t, loc, rate=125) for t, loc in PROMPTS))
        print(f"render_all-style concurrent render of {len(PROMPTS)} prompts: {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    asyncio.run(main())
