"""Reference plugin for bench_plugin: parses each request and answers reward 0, so the
throughput it reaches is the protocol + Python I/O ceiling, without any checking work."""
import json, sys
for line in sys.stdin:
    req = json.loads(line)
    sys.stdout.write(json.dumps({"id": req["id"], "reward": 0.0}) + "\n")
    sys.stdout.flush()
