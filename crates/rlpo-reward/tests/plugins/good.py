"""Test plugin: answers every request in order. reward = metadata.k (unique per sample, so a
mis-assigned answer is detected); response "error" -> protocol error answer."""
import json
import os
import sys

sys.stderr.write(f"ready pid={os.getpid()}\n")
sys.stderr.flush()
for line in sys.stdin:
    req = json.loads(line)
    if req.get("handshake"):
        sys.stdout.write(json.dumps({"id": req["id"], "ready": True}) + "\n")
        sys.stdout.flush()
        continue
    if req["response"] == "error":
        out = {"id": req["id"], "error": "cannot score this one"}
    else:
        k = float(req["metadata"]["k"])
        out = {"id": req["id"], "reward": k, "parts": {"k": k, "len": req["response_len"]}}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
