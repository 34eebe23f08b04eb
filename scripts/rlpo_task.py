"""The CPU quickstart's task as rlpo runs it, in Python, for the TRL side-by-side scripts.

- `arithmetic_samples`: a faithful port of rlpo's synthetic arithmetic generator
  (crates/rlpo-data/src/synthetic/{mod,arithmetic}.rs with crates/rlpo-data/src/rng.rs): the same
  SplitMix64 streams, so sample i, its answer and the prompt text are identical to rlpo's.
- `rlpo_order`: the dataset order rlpo's trainer draws batches in (crates/rlpo-data/src/dataset.rs:
  a Fisher-Yates permutation per epoch from derive_seed(seed, SHUFFLE, epoch)), so step k of a TRL
  run sees the same 4 prompts as step k of `rlpo train`.
- `math_last_number_reward`: rlpo's `math` reward with `extract = "last_number"`
  (crates/rlpo-reward/src/math/{extract,number}.rs): the last number token of the response,
  compared exactly (as a rational) with the answer; 1.0 if equal, else 0.0.

Standard library only, so it can be checked without torch.
"""

from __future__ import annotations

from fractions import Fraction

MASK64 = (1 << 64) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15
DOMAIN_SHUFFLE = 0x53485546  # "SHUF"
DOMAIN_SYNTHETIC = 0x53594E54  # "SYNT"

QUICKSTART_TEMPLATE = "What is {expression}? Answer with just the number."


def mix64(z: int) -> int:
    z &= MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def derive_seed(seed: int, domain: int, index: int) -> int:
    return mix64((mix64((mix64(seed) + domain) & MASK64) + index) & MASK64)


class SplitMix64:
    def __init__(self, seed: int):
        self.state = seed & MASK64

    def next_u64(self) -> int:
        self.state = (self.state + GOLDEN_GAMMA) & MASK64
        return mix64(self.state)

    def below(self, n: int) -> int:
        """Uniform in [0, n): Lemire's multiply-shift with rejection, as in rlpo."""
        assert n > 0
        threshold = ((1 << 64) - n) % n
        while True:
            m = self.next_u64() * n
            if (m & MASK64) >= threshold:
                return m >> 64

    def range_inclusive(self, lo: int, hi: int) -> int:
        return lo + self.below(hi - lo + 1)

    def shuffle(self, items: list) -> None:
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]


def _evaluate(operands: list[int], ops: list[str]) -> int:
    """`*` binds tighter than `+ -`, left to right otherwise."""
    total, sign, term = 0, 1, operands[0]
    for op, x in zip(ops, operands[1:]):
        if op == "*":
            term *= x
        else:
            total += sign * term
            sign = 1 if op == "+" else -1
            term = x
    return total + sign * term


def _render(operands: list[int], ops: list[str]) -> str:
    s = str(operands[0])
    for op, x in zip(ops, operands[1:]):
        s += f" {op} {x}"
    return s


def arithmetic_instance(
    seed: int,
    index: int,
    min_digits: int = 1,
    max_digits: int = 1,
    min_operators: int = 1,
    max_operators: int = 1,
    operators: tuple[str, ...] = ("+", "-", "*"),
    allow_negative: bool = False,
) -> tuple[str, int]:
    """(expression, answer) of synthetic sample `index`, exactly as rlpo draws it."""
    rng = SplitMix64(derive_seed(seed, DOMAIN_SYNTHETIC, index))
    for _ in range(100_000):
        digits = rng.range_inclusive(min_digits, max_digits)
        n_ops = rng.range_inclusive(min_operators, max_operators)
        lo, hi = (1, 9) if digits == 1 else (10 ** (digits - 1), 10**digits - 1)
        operands = [rng.range_inclusive(lo, hi) for _ in range(n_ops + 1)]
        ops = [operators[rng.below(len(operators))] for _ in range(n_ops)]
        value = _evaluate(operands, ops)
        if value < 0 and not allow_negative:
            continue  # redrawn, as rlpo does: the quickstart has no negative answers
        return _render(operands, ops), value
    raise RuntimeError(f"no non-negative expression for sample {index}")


def arithmetic_samples(seed: int = 0, size: int = 1000, template: str = QUICKSTART_TEMPLATE) -> list[dict]:
    """rlpo's `[data.synthetic] task = "arithmetic"` set (quickstart settings), in load order.

    Each sample: {"id", "prompt": [{"role": "user", "content": ...}], "answer": str}. rlpo adds no
    system message (`[model] system_prompt` is unset), so the chat template's own default applies.
    """
    out = []
    for i in range(size):
        expression, value = arithmetic_instance(seed, i)
        out.append(
            {
                "id": f"arithmetic-{i}",
                "prompt": [{"role": "user", "content": template.replace("{expression}", expression)}],
                "answer": str(value),
            }
        )
    return out


def epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    order = list(range(n))
    SplitMix64(derive_seed(seed, DOMAIN_SHUFFLE, epoch)).shuffle(order)
    return order


def rlpo_order(samples: list, count: int, seed: int = 0) -> list:
    """The first `count` samples in the order rlpo's trainer consumes them (`data.shuffle = true`)."""
    out: list = []
    epoch = 0
    while len(out) < count:
        order = epoch_order(seed, epoch, len(samples))
        out.extend(samples[i] for i in order[: count - len(out)])
        epoch += 1
    return out


# ---------------------------------------------------------------------------------------------
# math reward, extract = "last_number"

_DIGITS = "0123456789"
_MINUS = "\u2212"


def _is_digit(s: str, i: int) -> bool:
    return 0 <= i < len(s) and s[i] in _DIGITS


def _digit_run(s: str, i: int) -> int:
    n = 0
    while i + n < len(s) and s[i + n] in _DIGITS:
        n += 1
    return n


def _sign_allowed_before(s: str, i: int) -> bool:
    """Whether a `-` at index i can be a sign: not after an ASCII letter/digit or `)]}_`."""
    if i == 0:
        return True
    c = s[i - 1]
    return not ((c.isascii() and c.isalnum()) or c in ")]}_")


def number_tokens(s: str) -> list[str]:
    """rlpo's NumberTokens: `[-]digits[,ddd]*[.digits][/digits][%]` or `[-].digits...`."""
    out = []
    pos = 0
    while True:
        i = pos
        while i < len(s) and not (s[i] in _DIGITS or (s[i] == "." and _is_digit(s, i + 1))):
            i += 1
        if i >= len(s):
            return out
        start = i
        end = start + _digit_run(s, start)
        if 1 <= end - start <= 3:
            while end < len(s) and s[end] == "," and _digit_run(s, end + 1) == 3 and not _is_digit(s, end + 4):
                end += 4
        if end < len(s) and s[end] == "." and _is_digit(s, end + 1):
            end += 1 + _digit_run(s, end + 1)
        if end < len(s) and s[end] == "/" and _is_digit(s, end + 1):
            end += 1 + _digit_run(s, end + 1)
        if end < len(s) and s[end] == "%":
            end += 1
        elif s[end : end + 2] == "\\%":
            end += 2
        if start >= 1 and s[start - 1] in ("-", _MINUS) and _sign_allowed_before(s, start - 1):
            start -= 1
        pos = end
        out.append(s[start:end])


_I128_MAX = (1 << 127) - 1


def _decimal(t: str) -> Fraction | None:
    """`digits[,ddd]*[.digits]` or `.digits` (the token grammar guarantees the comma groups)."""
    int_part, _, frac = t.partition(".")
    int_digits = int_part.replace(",", "")
    if not int_digits and not frac:
        return None
    n = int(int_digits) if int_digits else 0
    if n > _I128_MAX:
        return None  # rlpo's i128 overflows: the answer is then compared as text, never equal here
    value = Fraction(n)
    if frac:
        value += Fraction(int(frac), 10 ** len(frac))
    return value


def parse_number_token(token: str) -> tuple[Fraction, bool] | None:
    """(value, is_percent) of a number token, or None (rlpo then compares text: never equal)."""
    t = token.strip().replace(_MINUS, "-")
    percent = False
    if t.endswith("\\%"):
        t, percent = t[:-2], True
    elif t.endswith("%"):
        t, percent = t[:-1], True
    negative = t.startswith("-")
    if negative:
        t = t[1:]
    num, slash, den = t.partition("/")
    a = _decimal(num)
    if a is None:
        return None
    if slash:
        b = _decimal(den)
        if b is None or b == 0:
            return None
        a = a / b
    return (-a if negative else a), percent


def math_last_number_correct(response: str, answer: str) -> bool:
    tokens = number_tokens(response)
    if not tokens:
        return False  # no answer
    pred = parse_number_token(tokens[-1])
    gt = parse_number_token(answer.strip())
    if pred is None or gt is None:
        return False
    (pv, pp), (gv, gp) = pred, gt
    if pp == gp:
        return pv == gv
    p, plain = (pv, gv) if pp else (gv, pv)
    return p == plain or p / 100 == plain  # a percentage matches either reading, as in rlpo


def math_last_number_reward(completions, answer, **_kwargs) -> list[float]:
    """TRL reward function: `completions` are chat completions ([{"role", "content"}]) or strings."""
    out = []
    for c, a in zip(completions, answer):
        text = c[0]["content"] if isinstance(c, list) else c
        out.append(1.0 if math_last_number_correct(text, a) else 0.0)
    return out


def _self_test() -> None:
    g = SplitMix64(0)
    assert [g.next_u64() for _ in range(3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    assert number_tokens("10-7=3, x = -5; 1,000 and 3,4,5 is 18.") == ["10", "7", "3", "-5", "1,000", "3", "4", "5", "18"]
    assert number_tokens("50% of .5 is 1/4 and \u22122, 12,3456") == ["50%", ".5", "1/4", "\u22122", "12", "3456"]
    cases = [
        ("\\boxed{3} and finally 4", "4", True),
        ("\\boxed{3} and finally 4", "3", False),
        ("version 1.2.3", "3", False),
        ("Total: 2,500,000 people", "2500000", True),
        ("The answer is 1,000.", "1000", True),
        ("result: \u22127", "-7", True),
        ("12.0", "12", True),
        ("24/2", "12", True),
        ("12%", "12", True),
        ("no number", "0", False),
        ("5 - 3 = 2", "2", True),
    ]
    for response, gt, want in cases:
        assert math_last_number_correct(response, gt) == want, (response, gt)


if __name__ == "__main__":
    _self_test()
    samples = arithmetic_samples()
    for s in rlpo_order(samples, 8):
        print(s["id"], repr(s["prompt"][0]["content"]), s["answer"])
