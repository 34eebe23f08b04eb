#!/usr/bin/env python3
"""Countdown check, as an rlpo external reward plugin (JSON lines on stdin/stdout).

Recipe:

    [[reward.fns]]
    kind = "external"
    name = "countdown_py"
    command = ["python3", "reward_fns/countdown_reward.py"]

The response must contain <answer>EXPR</answer> (the last one counts; "= 40" after EXPR is
ignored). EXPR may use + - * / ( ) and integers; each integer must be one of metadata.numbers,
each used at most once (--use-all: exactly once), and EXPR must equal metadata.target (or the
ground truth) exactly. Parsing uses `ast` with a whitelist of node types and exact Fraction
arithmetic: never eval, no names, no calls, no powers; long or deep input is refused.

Answer: reward 1.0 correct, 0.1 valid expression but wrong (TinyZero's format score; change
FORMAT_SCORE), 0.0 no answer or invalid; parts {"valid": 0/1}.
Only the standard library is needed. Protocol: reward_fns/README.md. The built-in
`kind = "countdown"` does the same in Rust, faster; this file is an example to adapt.
"""
import ast
import json
import re
import sys
from collections import Counter
from fractions import Fraction

FORMAT_SCORE = 0.1
MAX_LEN = 256
MAX_DEPTH = 32
USE_ALL = "--use-all" in sys.argv
ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)


class Invalid(Exception):
    pass


def evaluate(node, used, depth=0):
    """Exact value of a whitelisted AST node; appends integer literals to `used`."""
    if depth > MAX_DEPTH:
        raise Invalid("too deep")
    if isinstance(node, ast.Expression):
        return evaluate(node.body, used, depth + 1)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -evaluate(node.operand, used, depth + 1)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        a = evaluate(node.left, used, depth + 1)
        b = evaluate(node.right, used, depth + 1)
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
        if b == 0:
            raise Invalid("division by zero")
        return a / b
    raise Invalid(f"not allowed: {type(node).__name__}")


def score(response, numbers, target):
    found = ANSWER.findall(response)
    if not found:
        return 0.0, 0.0
    expr = found[-1].split("=")[0].strip()
    if not expr or len(expr) > MAX_LEN or not re.fullmatch(r"[\d+\-*/()\s]+", expr):
        return 0.0, 0.0
    try:
        used = []
        value = evaluate(ast.parse(expr, mode="eval"), used)
    except (Invalid, SyntaxError, RecursionError, ValueError):
        return 0.0, 0.0
    have, want = Counter(numbers), Counter(used)
    if any(want[n] > have[n] for n in want) or (USE_ALL and want != have):
        return FORMAT_SCORE, 1.0
    return (1.0 if value == target else FORMAT_SCORE), 1.0


def answer(req):
    meta = req.get("metadata") or {}
    numbers = meta.get("numbers", meta.get("nums"))
    target = meta.get("target", req.get("ground_truth"))
    if not isinstance(numbers, list) or target is None:
        return {"id": req["id"], "error": "metadata needs `numbers` and `target` (or a ground_truth)"}
    reward, valid = score(req["response"], [int(n) for n in numbers], Fraction(int(str(target).strip())))
    return {"id": req["id"], "reward": reward, "parts": {"valid": valid}}


def main():
    print("countdown_reward ready", file=sys.stderr, flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
        except json.JSONDecodeError as e:
            print(f"bad request line: {e}", file=sys.stderr, flush=True)
            continue
        if req.get("handshake"):
            # Start-up handshake (protocol 2): say we are ready; one request at a time.
            reply = {"id": req["id"], "ready": True, "workers": 1}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
            continue
        try:
            reply = answer(req)
        except Exception as e:  # report, never crash on one sample
            reply = {"id": req.get("id"), "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
