"""Test reward plugin (stdlib only): each sample's reward is fixed by its position k in the stream
of samples this process scores (0, 1, 2, ... in the order rlpo sends them; the start-up handshake
is not a sample and is not counted), not by the sampled text, so a test's groups are the same for
every seed. With G = 4 rows per group and generation batches of whole groups, group j of the run
holds samples 4j .. 4j+3. (Request ids are not used: the handshake takes one, and a plugin
restarted mid-run would start counting again; the tests abort on any plugin failure.)

  alternating        rows alternate -1, +1: every group varies
  every_other_flat   groups with an even j are all -1 (a DAPO filter drops them), odd ones alternate
"""
import json
import sys

MODE = sys.argv[1]
G = 4

k = 0
for line in sys.stdin:
    req = json.loads(line)
    if "handshake" in req:
        # Answered like a protocol-1 plugin, which scores the empty handshake request.
        sys.stdout.write(json.dumps({"id": req["id"], "reward": 0.0}) + "\n")
        sys.stdout.flush()
        continue
    reward = 1.0 if k % 2 else -1.0
    if MODE == "every_other_flat" and (k // G) % 2 == 0:
        reward = -1.0
    k += 1
    sys.stdout.write(json.dumps({"id": req["id"], "reward": reward}) + "\n")
    sys.stdout.flush()
