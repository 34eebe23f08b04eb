"""Test plugin: prints malformed output for some responses:
"bad" -> not JSON; "badreward" -> reward is a string; "noid" -> no id; "nan" -> NaN literal;
"blank" -> an empty line first, then a good answer. Everything else is answered correctly."""
import json
import sys

for line in sys.stdin:
    req = json.loads(line)
    if req.get("handshake"):
        sys.stdout.write(json.dumps({"id": req["id"], "ready": True}) + "\n")
        sys.stdout.flush()
        continue
    r, i, k = req["response"], req["id"], float(req["metadata"]["k"])
    if r == "bad":
        out = "this is not json {"
    elif r == "badreward":
        out = json.dumps({"id": i, "reward": "high"})
    elif r == "noid":
        out = json.dumps({"reward": k})
    elif r == "nan":
        out = json.dumps({"id": i, "reward": float("nan")})
    elif r == "blank":
        out = "\n" + json.dumps({"id": i, "reward": k})
    else:
        out = json.dumps({"id": i, "reward": k})
    sys.stdout.write(out + "\n")
    sys.stdout.flush()
