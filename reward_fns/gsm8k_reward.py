#!/usr/bin/env python3
"""GSM8K-style answer check, as an rlpo external reward plugin (JSON lines on stdin/stdout).

Recipe:

    [[reward.fns]]
    kind = "external"
    name = "gsm8k"
    command = ["python3", "reward_fns/gsm8k_reward.py"]

Uses `math-verify` (pip install math-verify) when it is importable, otherwise a small exact
fallback: the answer is the last \\boxed{...}, else the text after the last "####", else the last
number; numbers are compared exactly as fractions after removing "$", ",", "%" and text.

Answer: reward 1.0 if correct else 0.0, parts {"correct": 0/1, "has_answer": 0/1}.
Options: --no-math-verify forces the fallback; --last-number uses only the last number;
--workers N checks in N processes and answers out of order (set `concurrency` >= N); the
start-up handshake tells rlpo N, so each request's timeout starts when a worker takes it.
Only the standard library is needed. Protocol: reward_fns/README.md.
"""
import json
import re
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction

USE_MATH_VERIFY = "--no-math-verify" not in sys.argv
LAST_NUMBER_ONLY = "--last-number" in sys.argv

try:
    if not USE_MATH_VERIFY:
        raise ImportError
    from math_verify import parse as mv_parse, verify as mv_verify
except ImportError:
    mv_parse = mv_verify = None

# A number: optional sign, digits with optional thousands groups, optional decimals, optional /b.
NUMBER = re.compile(r"(?<![\w)])-?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:/\d+)?%?")


def last_boxed(text):
    """Content of the last \\boxed{...} with balanced braces, or None."""
    at = text.rfind("\\boxed")
    if at < 0:
        return None
    i = text.find("{", at)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None  # truncated: no answer rather than an earlier one


def extract(text):
    if LAST_NUMBER_ONLY:
        nums = NUMBER.findall(text)
        return nums[-1] if nums else None
    boxed = last_boxed(text)
    if boxed is not None or "\\boxed" in text:
        return boxed
    if "####" in text:
        rest = text.rsplit("####", 1)[1].strip()
        return rest.splitlines()[0] if rest else None
    nums = NUMBER.findall(text)
    return nums[-1] if nums else None


def to_number(s):
    """(exact value, is_percent) of a simple numeric answer, or None."""
    s = s.strip().replace("\\!", "").replace("{,}", ",").replace("\\$", "").replace("$", "")
    s = re.sub(r"\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}", r"(\1)/(\2)", s)
    s = re.sub(r"\\[dt]?frac(\d)(\d)", r"\1/\2", s)
    s = re.sub(r"\\(?:text|mbox|mathrm)\{([^{}]*)\}", r" \1 ", s).replace("\\%", "%").rstrip(".").strip()
    if "=" in s:
        s = s.rsplit("=", 1)[1].strip()
    percent = s.endswith("%")
    s = s.rstrip("%").strip()
    m = re.fullmatch(r"\(?(-?[\d,]*\.?\d+)\)?(?:\s*/\s*\(?(-?\d+)\)?)?", s)
    if not m:
        nums = NUMBER.findall(s)
        if len(nums) != 1:
            return None
        return to_number(nums[0])
    try:
        value = Fraction(m.group(1).replace(",", ""))
        if m.group(2):
            value /= Fraction(m.group(2))
    except (ValueError, ZeroDivisionError):
        return None
    return value, percent


def numbers_match(a, b):
    """Exact equality; a percentage against a plain number matches either reading (50% ~ 50 ~ 0.5)."""
    (x, xp), (y, yp) = a, b
    if xp == yp:
        return x == y
    p, plain = (x, y) if xp else (y, x)
    return p == plain or p / 100 == plain


def ground_truth_answer(gt):
    gt = str(gt)
    if "####" in gt:
        return gt.rsplit("####", 1)[1].strip()
    return last_boxed(gt) if "\\boxed" in gt and last_boxed(gt) is not None else gt.strip()


def check(response, ground_truth):
    gt = ground_truth_answer(ground_truth)
    if mv_verify is not None:
        gold, pred = mv_parse(gt), mv_parse(response)
        return bool(pred), bool(pred) and mv_verify(gold, pred)
    pred = extract(response)
    if pred is None or not pred.strip():
        return False, False
    a, b = to_number(pred), to_number(gt)
    if a is not None and b is not None:
        return True, numbers_match(a, b)
    return True, re.sub(r"\s+", "", pred).lower() == re.sub(r"\s+", "", gt).lower()


def answer(req):
    if req.get("ground_truth") is None:
        return {"id": req["id"], "error": "sample has no ground_truth"}
    has, ok = check(req["response"], req["ground_truth"])
    return {"id": req["id"], "reward": 1.0 if ok else 0.0, "parts": {"correct": float(ok), "has_answer": float(has)}}


def workers_arg():
    """Value of --workers N (default 1)."""
    if "--workers" in sys.argv:
        return max(1, int(sys.argv[sys.argv.index("--workers") + 1]))
    return 1


def safe_answer(req):
    try:
        return answer(req)
    except Exception as e:  # one bad sample must not kill the plugin: report it instead
        return {"id": req.get("id"), "error": f"{type(e).__name__}: {e}"}


def main():
    backend = "math-verify" if mv_verify is not None else "fallback"
    workers = workers_arg()
    print(f"gsm8k_reward ready ({backend}, {workers} worker(s))", file=sys.stderr, flush=True)
    lock = threading.Lock()

    def emit(reply):
        with lock:
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()

    # With --workers N > 1, requests are checked in N processes and answered as they finish, i.e.
    # out of order; set the recipe's `concurrency` to at least N so that all of them are busy.
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
        except json.JSONDecodeError as e:
            print(f"bad request line: {e}", file=sys.stderr, flush=True)
            continue
        if req.get("handshake"):
            # Start-up handshake (protocol 2): ready, and how many requests run at once, so that
            # rlpo starts a request's timeout only when a worker is free to check it.
            emit({"id": req["id"], "ready": True, "workers": workers})
        elif pool is None:
            emit(safe_answer(req))
        else:
            rid = req.get("id")
            fut = pool.submit(safe_answer, req)
            fut.add_done_callback(
                lambda f, rid=rid: emit(f.result() if f.exception() is None else {"id": rid, "error": repr(f.exception())})
            )
    if pool is not None:
        pool.shutdown(wait=True)


if __name__ == "__main__":
    main()
