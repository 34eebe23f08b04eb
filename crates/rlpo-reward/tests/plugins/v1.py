"""Test plugin written for protocol 1 (the README's minimal plugin, unchanged): it knows nothing
of the start-up handshake and answers it like any request."""
import json, sys

for line in sys.stdin:
    req = json.loads(line)
    try:
        ok = req["response"].strip().endswith(str(req["ground_truth"]))
        reply = {"id": req["id"], "reward": 1.0 if ok else 0.0}
    except Exception as e:                       # report, do not crash
        reply = {"id": req["id"], "error": repr(e)}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
