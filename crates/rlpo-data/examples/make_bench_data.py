#!/usr/bin/env python3
"""Writes a large gsm8k-like verl-layout dataset (Parquet + JSONL) for `examples/load_bench.rs`.

Not committed data: run it into a scratch folder.

    /tmp/pa/bin/python crates/rlpo-data/examples/make_bench_data.py /tmp/bench 100000
"""

import json
import pathlib
import random
import sys

import pyarrow as pa
import pyarrow.parquet as pq

out = pathlib.Path(sys.argv[1])
n = int(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
rng = random.Random(0)
words = "the of a to in is that for it as with was on be at by this had not are but from or have".split()


def text(k):
    return " ".join(rng.choice(words) for _ in range(k))


rows = []
for i in range(n):
    q = text(60) + "?"
    rows.append({
        "data_source": "openai/gsm8k",
        "prompt": [{"role": "user", "content": q + " Let's think step by step and output the final answer after \"####\"."}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": str(rng.randint(0, 10000))},
        "extra_info": {"split": "train", "index": i, "question": q, "answer": text(80)},
    })
pq.write_table(pa.Table.from_pylist(rows), out / "bench.parquet")
with open(out / "bench.jsonl", "w") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")
for p in sorted(out.iterdir()):
    print(p, p.stat().st_size, "bytes")
