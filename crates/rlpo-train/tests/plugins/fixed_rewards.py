"""Test reward plugin (stdlib only): each sample's reward is fixed by its request id, not by the
sampled text, so a test's groups are the same for every seed. Ids count the samples the run
scores (0, 1, 2, ...); with G = 4 rows per group and generation batches of whole groups, group k
of the run holds ids 4k .. 4k+3.

  alternating        rows alternate -1, +1: every group varies
  every_other_flat   groups with an even k are all -1 (a DAPO filter drops them), odd ones alternate
"""
import json
import sys

MODE = sys.argv[1]
G = 4

for line in sys.stdin:
    req = json.loads(line)
    i = req["id"]
    reward = 1.0 if i % 2 else -1.0
    if MODE == "every_other_flat" and (i // G) % 2 == 0:
        reward = -1.0
    sys.stdout.write(json.dumps({"id": i, "reward": reward}) + "\n")
    sys.stdout.flush()
