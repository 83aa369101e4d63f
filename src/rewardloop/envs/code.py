"""`code`: write the body of a small Python function; the reward is the fraction of its unit tests that pass.

Problems are hand-written for this project (MBPP / HumanEval *style*, none copied from a dataset), from one-liners
(``add``, ``is_even``) to moderate ones (``roman_to_int``, ``balanced_brackets``, ``merge_intervals``). A prompt is
plain Python: the signature and a docstring stating the contract, so ``prompt + completion`` is a runnable module
(HumanEval convention). The completion column holds the reference body for SFT. Completions are scored by
``rewardloop.rewards.code_tests.code_tests_reward`` (reward name ``code_tests``), which runs them in the sandbox.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from rewardloop.envs.base import DatasetEnv


@dataclass(frozen=True)
class CodeProblem:
    """One function to write: its signature, contract (docstring), a reference body and assert-statement tests."""

    name: str
    signature: str  # "add(a, b)"
    doc: str
    reference: str  # the function body, indented four spaces
    tests: tuple[str, ...]

    @property
    def prompt(self) -> str:
        return f'def {self.signature}:\n    """{self.doc}"""\n'


def _p(name: str, args: str, doc: str, body: str, *tests: str) -> CodeProblem:
    lines = body.strip("\n").split("\n")
    return CodeProblem(name, f"{name}({args})", doc, "".join(f"    {line}\n" for line in lines), tests)


# fmt: off
PROBLEMS: tuple[CodeProblem, ...] = (
    _p("add", "a, b", "Return the sum of a and b.",
       "return a + b",
       "assert add(1, 2) == 3", "assert add(-4, 4) == 0", "assert add(0, 0) == 0", "assert add(2.5, 0.5) == 3.0"),
    _p("is_even", "n", "Return True if the integer n is even, else False.",
       "return n % 2 == 0",
       "assert is_even(4) is True", "assert is_even(7) is False", "assert is_even(0) is True",
       "assert is_even(-3) is False"),
    _p("reverse_string", "s", "Return the string s reversed.",
       "return s[::-1]",
       "assert reverse_string('abc') == 'cba'", "assert reverse_string('') == ''",
       "assert reverse_string('racecar') == 'racecar'", "assert reverse_string('ab c') == 'c ba'"),
    _p("max_of_list", "xs", "Return the largest element of the non-empty list xs.",
       "best = xs[0]\nfor x in xs[1:]:\n    if x > best:\n        best = x\nreturn best",
       "assert max_of_list([3, 1, 2]) == 3", "assert max_of_list([-5, -2, -9]) == -2", "assert max_of_list([7]) == 7",
       "assert max_of_list([1.5, 2.5, 2.0]) == 2.5"),
    _p("square", "x", "Return x multiplied by itself.",
       "return x * x",
       "assert square(3) == 9", "assert square(-4) == 16", "assert square(0) == 0"),
    _p("absolute", "x", "Return the absolute value of the number x without using abs().",
       "return -x if x < 0 else x",
       "assert absolute(-3) == 3", "assert absolute(5) == 5", "assert absolute(0) == 0",
       "assert absolute(-2.5) == 2.5"),
    _p("count_vowels", "s", "Return how many characters of s are vowels (a, e, i, o, u), ignoring case.",
       "return sum(1 for ch in s.lower() if ch in 'aeiou')",
       "assert count_vowels('hello') == 2", "assert count_vowels('AEIOU') == 5", "assert count_vowels('rhythm') == 0",
       "assert count_vowels('') == 0"),
    _p("factorial", "n", "Return n! for a non-negative integer n (0! is 1).",
       "result = 1\nfor k in range(2, n + 1):\n    result *= k\nreturn result",
       "assert factorial(0) == 1", "assert factorial(1) == 1", "assert factorial(5) == 120",
       "assert factorial(10) == 3628800"),
    _p("fibonacci", "n", "Return the n-th Fibonacci number, with fibonacci(0) == 0 and fibonacci(1) == 1.",
       "a, b = 0, 1\nfor _ in range(n):\n    a, b = b, a + b\nreturn a",
       "assert fibonacci(0) == 0", "assert fibonacci(1) == 1", "assert fibonacci(2) == 1", "assert fibonacci(10) == 55",
       "assert fibonacci(30) == 832040"),
    _p("is_palindrome", "s", "Return True if s reads the same backwards, ignoring case and non-alphanumerics.",
       "cleaned = [ch.lower() for ch in s if ch.isalnum()]\nreturn cleaned == cleaned[::-1]",
       "assert is_palindrome('Racecar') is True", "assert is_palindrome('A man, a plan, a canal: Panama') is True",
       "assert is_palindrome('hello') is False", "assert is_palindrome('') is True"),
    _p("sum_list", "xs", "Return the sum of the numbers in the list xs (0 for an empty list).",
       "total = 0\nfor x in xs:\n    total += x\nreturn total",
       "assert sum_list([1, 2, 3]) == 6", "assert sum_list([]) == 0", "assert sum_list([-1, 1, -1]) == -1"),
    _p("average", "xs", "Return the arithmetic mean of the non-empty list of numbers xs.",
       "return sum(xs) / len(xs)",
       "assert average([1, 2, 3]) == 2", "assert average([5]) == 5", "assert average([1, 2]) == 1.5",
       "assert average([-2, 2, 3, 5]) == 2"),
    _p("count_char", "s, c", "Return how many times the character c occurs in the string s.",
       "return sum(1 for ch in s if ch == c)",
       "assert count_char('banana', 'a') == 3", "assert count_char('banana', 'z') == 0",
       "assert count_char('', 'a') == 0",
       "assert count_char('AaA', 'A') == 2"),
    _p("first_word", "s", "Return the first whitespace-separated word of s, or '' if s has no words.",
       "words = s.split()\nreturn words[0] if words else ''",
       "assert first_word('hello world') == 'hello'", "assert first_word('   padded  text') == 'padded'",
       "assert first_word('') == ''", "assert first_word('single') == 'single'"),
    _p("celsius_to_fahrenheit", "c", "Convert a temperature from degrees Celsius to degrees Fahrenheit.",
       "return c * 9 / 5 + 32",
       "assert celsius_to_fahrenheit(0) == 32", "assert celsius_to_fahrenheit(100) == 212",
       "assert celsius_to_fahrenheit(-40) == -40", "assert abs(celsius_to_fahrenheit(37) - 98.6) < 1e-9"),
    _p("is_prime", "n", "Return True if the integer n is a prime number, else False.",
       "if n < 2:\n    return False\nk = 2\nwhile k * k <= n:\n    if n % k == 0:\n        return False\n    k += 1\n"
       "return True",
       "assert is_prime(2) is True", "assert is_prime(17) is True", "assert is_prime(1) is False",
       "assert is_prime(21) is False", "assert is_prime(7919) is True"),
    _p("gcd", "a, b", "Return the greatest common divisor of the non-negative integers a and b (gcd(0, 0) == 0).",
       "while b:\n    a, b = b, a % b\nreturn a",
       "assert gcd(12, 18) == 6", "assert gcd(7, 13) == 1", "assert gcd(0, 5) == 5", "assert gcd(0, 0) == 0"),
    _p("unique_sorted", "xs", "Return the distinct elements of xs in ascending order, as a list.",
       "return sorted(set(xs))",
       "assert unique_sorted([3, 1, 3, 2, 1]) == [1, 2, 3]", "assert unique_sorted([]) == []",
       "assert unique_sorted(['b', 'a', 'b']) == ['a', 'b']"),
    _p("flatten", "lists", "Return one list holding the elements of every list in lists, in order (one level deep).",
       "out = []\nfor inner in lists:\n    out.extend(inner)\nreturn out",
       "assert flatten([[1, 2], [3], []]) == [1, 2, 3]", "assert flatten([]) == []",
       "assert flatten([['a'], ['b', 'c']]) == ['a', 'b', 'c']", "assert flatten([[[1]], [2]]) == [[1], 2]"),
    _p("word_count", "s", "Return the number of whitespace-separated words in s.",
       "return len(s.split())",
       "assert word_count('the quick brown fox') == 4", "assert word_count('') == 0",
       "assert word_count('  spaced   out  ') == 2"),
    _p("capitalize_words", "s",
       "Return the words of s (split on whitespace) with their first letter upper-cased and the rest lower-cased, "
       "joined by single spaces.",
       "return ' '.join(w.capitalize() for w in s.split())",
       "assert capitalize_words('hello world') == 'Hello World'",
       "assert capitalize_words('pYTHON  code') == 'Python Code'",
       "assert capitalize_words('') == ''"),
    _p("second_largest", "xs", "Return the second largest distinct value in xs, or None if there are fewer than two.",
       "values = sorted(set(xs))\nreturn values[-2] if len(values) >= 2 else None",
       "assert second_largest([4, 1, 3]) == 3", "assert second_largest([5, 5, 2]) == 2",
       "assert second_largest([7, 7]) is None", "assert second_largest([]) is None",
       "assert second_largest([-1, -2]) == -2"),
    _p("running_sum", "xs", "Return the list of prefix sums of xs: element i is xs[0] + ... + xs[i].",
       "out, total = [], 0\nfor x in xs:\n    total += x\n    out.append(total)\nreturn out",
       "assert running_sum([1, 2, 3]) == [1, 3, 6]", "assert running_sum([]) == []",
       "assert running_sum([5, -5, 5]) == [5, 0, 5]"),
    _p("char_frequency", "s", "Return a dict mapping each character of s to the number of times it occurs.",
       "counts = {}\nfor ch in s:\n    counts[ch] = counts.get(ch, 0) + 1\nreturn counts",
       "assert char_frequency('aab') == {'a': 2, 'b': 1}", "assert char_frequency('') == {}",
       "assert char_frequency('xyzx') == {'x': 2, 'y': 1, 'z': 1}"),
    _p("merge_sorted", "a, b", "Merge the ascending lists a and b into one ascending list.",
       "out, i, j = [], 0, 0\nwhile i < len(a) and j < len(b):\n    if a[i] <= b[j]:\n        out.append(a[i])\n"
       "        i += 1\n    else:\n        out.append(b[j])\n        j += 1\nreturn out + a[i:] + b[j:]",
       "assert merge_sorted([1, 4, 6], [2, 3, 7]) == [1, 2, 3, 4, 6, 7]", "assert merge_sorted([], [1, 2]) == [1, 2]",
       "assert merge_sorted([1, 1], [1]) == [1, 1, 1]", "assert merge_sorted([], []) == []"),
    _p("binary_search", "xs, target", "Return an index of target in the ascending list xs, or -1 if it is absent.",
       "lo, hi = 0, len(xs) - 1\nwhile lo <= hi:\n    mid = (lo + hi) // 2\n"
       "    if xs[mid] == target:\n        return mid\n"
       "    if xs[mid] < target:\n        lo = mid + 1\n    else:\n        hi = mid - 1\nreturn -1",
       "assert binary_search([1, 3, 5, 7, 9], 7) == 3", "assert binary_search([1, 3, 5], 4) == -1",
       "assert binary_search([], 1) == -1", "assert binary_search([2], 2) == 0"),
    _p("rotate_left", "xs, k", "Return xs rotated left by k positions (k may exceed len(xs); [] stays []).",
       "if not xs:\n    return []\nk %= len(xs)\nreturn xs[k:] + xs[:k]",
       "assert rotate_left([1, 2, 3, 4], 1) == [2, 3, 4, 1]", "assert rotate_left([1, 2, 3], 5) == [3, 1, 2]",
       "assert rotate_left([], 3) == []", "assert rotate_left([1, 2], 0) == [1, 2]"),
    _p("chunk", "xs, n", "Split xs into consecutive lists of length n; the last one may be shorter.",
       "return [xs[i:i + n] for i in range(0, len(xs), n)]",
       "assert chunk([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]", "assert chunk([], 3) == []",
       "assert chunk([1, 2, 3], 3) == [[1, 2, 3]]"),
    _p("digit_sum", "n", "Return the sum of the decimal digits of the integer n (the sign is ignored).",
       "return sum(int(d) for d in str(abs(n)))",
       "assert digit_sum(123) == 6", "assert digit_sum(0) == 0", "assert digit_sum(-45) == 9",
       "assert digit_sum(9999) == 36"),
    _p("to_binary", "n", "Return the binary representation of the non-negative integer n, without a prefix.",
       "if n == 0:\n    return '0'\nbits = ''\nwhile n:\n    bits = str(n % 2) + bits\n    n //= 2\nreturn bits",
       "assert to_binary(0) == '0'", "assert to_binary(5) == '101'", "assert to_binary(8) == '1000'",
       "assert to_binary(255) == '11111111'"),
    _p("are_anagrams", "a, b", "Return True if a and b contain the same letters, ignoring case and spaces.",
       "def key(s):\n    return sorted(s.replace(' ', '').lower())\nreturn key(a) == key(b)",
       "assert are_anagrams('listen', 'silent') is True", "assert are_anagrams('Dormitory', 'dirty room') is True",
       "assert are_anagrams('abc', 'abd') is False", "assert are_anagrams('aab', 'ab') is False"),
    _p("remove_duplicates", "xs", "Return xs without repeated elements, keeping each first occurrence, in order.",
       "seen, out = set(), []\nfor x in xs:\n    if x not in seen:\n        seen.add(x)\n        out.append(x)\n"
       "return out",
       "assert remove_duplicates([3, 1, 3, 2, 1]) == [3, 1, 2]", "assert remove_duplicates([]) == []",
       "assert remove_duplicates(['a', 'a']) == ['a']"),
    _p("transpose", "matrix", "Return the transpose of a rectangular matrix given as a list of rows.",
       "return [list(col) for col in zip(*matrix)]",
       "assert transpose([[1, 2, 3], [4, 5, 6]]) == [[1, 4], [2, 5], [3, 6]]", "assert transpose([[1]]) == [[1]]",
       "assert transpose([]) == []"),
    _p("roman_to_int", "s", "Convert a Roman numeral (I, V, X, L, C, D, M; subtractive forms like IV) to an int.",
       "values = {'I': 1, 'V': 5, 'X': 10, 'L': 50, 'C': 100, 'D': 500, 'M': 1000}\ntotal = 0\n"
       "for i, ch in enumerate(s):\n    v = values[ch]\n    if i + 1 < len(s) and values[s[i + 1]] > v:\n"
       "        total -= v\n    else:\n        total += v\nreturn total",
       "assert roman_to_int('III') == 3", "assert roman_to_int('IV') == 4", "assert roman_to_int('XLII') == 42",
       "assert roman_to_int('MCMXCIV') == 1994"),
    _p("caesar_shift", "s, k",
       "Shift every ASCII letter of s forward by k places in the alphabet (wrapping, keeping case); "
       "leave other characters unchanged.",
       "out = []\nfor ch in s:\n    if 'a' <= ch <= 'z':\n        out.append(chr((ord(ch) - 97 + k) % 26 + 97))\n"
       "    elif 'A' <= ch <= 'Z':\n        out.append(chr((ord(ch) - 65 + k) % 26 + 65))\n    else:\n"
       "        out.append(ch)\nreturn ''.join(out)",
       "assert caesar_shift('abc', 1) == 'bcd'", "assert caesar_shift('xyz', 3) == 'abc'",
       "assert caesar_shift('Hello, World!', 13) == 'Uryyb, Jbeyq!'", "assert caesar_shift('abc', -1) == 'zab'"),
    _p("balanced_brackets", "s", "Return True if the brackets (), [] and {} in s are balanced and properly nested.",
       "pairs = {')': '(', ']': '[', '}': '{'}\nstack = []\nfor ch in s:\n    if ch in '([{':\n"
       "        stack.append(ch)\n"
       "    elif ch in pairs:\n        if not stack or stack.pop() != pairs[ch]:\n            return False\n"
       "return not stack",
       "assert balanced_brackets('([]{})') is True", "assert balanced_brackets('([)]') is False",
       "assert balanced_brackets('((') is False", "assert balanced_brackets('') is True",
       "assert balanced_brackets('a(b)c]') is False"),
    _p("longest_common_prefix", "words", "Return the longest common prefix of the strings in words ('' if none).",
       "if not words:\n    return ''\nprefix = words[0]\nfor w in words[1:]:\n    while not w.startswith(prefix):\n"
       "        prefix = prefix[:-1]\nreturn prefix",
       "assert longest_common_prefix(['flower', 'flow', 'flight']) == 'fl'",
       "assert longest_common_prefix(['dog', 'car']) == ''", "assert longest_common_prefix([]) == ''",
       "assert longest_common_prefix(['same', 'same']) == 'same'"),
    _p("run_length_encode", "s", "Encode s as each run's character followed by its length: 'aaab' -> 'a3b1'.",
       "out, i = [], 0\nwhile i < len(s):\n    j = i\n    while j < len(s) and s[j] == s[i]:\n        j += 1\n"
       "    out.append(f'{s[i]}{j - i}')\n    i = j\nreturn ''.join(out)",
       "assert run_length_encode('aaab') == 'a3b1'", "assert run_length_encode('') == ''",
       "assert run_length_encode('abc') == 'a1b1c1'", "assert run_length_encode('zzzzzzzzzzzz') == 'z12'"),
    _p("has_pair_sum", "xs, target", "Return True if two elements at different positions of xs add up to target.",
       "seen = set()\nfor x in xs:\n    if target - x in seen:\n        return True\n    seen.add(x)\nreturn False",
       "assert has_pair_sum([1, 4, 6], 10) is True", "assert has_pair_sum([5], 10) is False",
       "assert has_pair_sum([5, 5], 10) is True", "assert has_pair_sum([], 0) is False",
       "assert has_pair_sum([1, 2, 3], 7) is False"),
    _p("merge_intervals", "intervals",
       "Merge overlapping closed intervals given as [start, end] pairs; return them sorted by start.",
       "out = []\nfor start, end in sorted(intervals):\n    if out and start <= out[-1][1]:\n"
       "        out[-1][1] = max(out[-1][1], end)\n    else:\n        out.append([start, end])\nreturn out",
       "assert merge_intervals([[1, 3], [2, 6], [8, 10]]) == [[1, 6], [8, 10]]",
       "assert merge_intervals([[5, 6], [1, 2]]) == [[1, 2], [5, 6]]",
       "assert merge_intervals([[1, 4], [4, 5]]) == [[1, 5]]",
       "assert merge_intervals([]) == []"),
    _p("count_words", "text", "Return a dict from each lower-cased whitespace-separated word of text to its count.",
       "counts = {}\nfor w in text.lower().split():\n    counts[w] = counts.get(w, 0) + 1\nreturn counts",
       "assert count_words('the cat the hat') == {'the': 2, 'cat': 1, 'hat': 1}", "assert count_words('') == {}",
       "assert count_words('A a a') == {'a': 3}"),
)
# fmt: on


def code_problems() -> list[dict[str, Any]]:
    """Every problem as a dict: ``name``, ``prompt``, ``reference`` (the body), ``tests``, ``entry_point``."""
    return [
        {"name": p.name, "prompt": p.prompt, "reference": p.reference, "tests": list(p.tests), "entry_point": p.name}
        for p in PROBLEMS
    ]


def make_code_splits(seed: int = 0, test_fraction: float = 0.25) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Disjoint train/test rows (``prompt``, ``completion``, ``tests``, ``entry_point``), shuffled by ``seed``."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    rows = [
        {"prompt": p["prompt"], "completion": p["reference"], "tests": p["tests"], "entry_point": p["entry_point"]}
        for p in code_problems()
    ]
    random.Random(seed).shuffle(rows)
    n_test = min(len(rows) - 1, max(1, round(len(rows) * test_fraction)))
    return rows[n_test:], rows[:n_test]


class CodeEnv(DatasetEnv):
    """Single-step environment: observation = a signature + docstring, action = the body, reward = tests passed."""

    def __init__(self, rows: list[dict[str, Any]] | None = None, *, seed: int = 0) -> None:
        from rewardloop.rewards.code_tests import code_tests_reward

        super().__init__(rows if rows is not None else make_code_splits(seed)[0], code_tests_reward, seed=seed)
