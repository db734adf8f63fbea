"""The calculator's mathematics: parse a request, check it is safe and bounded, compute it with sympy.

Kept apart from the tool so that the worker process (``calculator_worker``) and the tool (``calculator``)
both import it, and neither imports the other.
The calculator tool: exact arithmetic and algebra with sympy, safe against code in the expression.

Input forms (all equivalent):
``calculator(expression="sqrt(2)*pi", operation="evaluate", precision=30)``,
``{"expression": "sqrt(2)*pi", "operation": "evaluate", "precision": 30}``, or a bare ``sqrt(2)*pi``.

Safety: the expression is tokenised by sympy's parser with a fixed transformation set, the generated
Python is checked against an allowlist of AST nodes and names (no attributes, subscripts, lambdas,
strings outside number/symbol constructors), and evaluated with empty builtins. Results whose size can
be predicted to explode (``9**9**9``, ``(10**7)!``) are refused before sympy computes them.
"""

from __future__ import annotations

import ast
import io
import json
import math
import re
import tokenize
from dataclasses import dataclass
from typing import Any

import sympy
from sympy.parsing.sympy_parser import (
    auto_number,
    auto_symbol,
    convert_xor,
    eval_expr,
    factorial_notation,
    implicit_multiplication,
    rationalize,
    repeated_decimals,
    stringify_expr,
)

from atlas_router.core.answers import first_json_object
from atlas_router.errors import AtlasError

OPERATIONS = ("evaluate", "simplify", "factor", "expand", "solve", "diff", "integrate")
MAX_EXPRESSION_CHARS = 2000
MAX_DIGITS = 100_000
MAX_PRECISION = 1000
_KEYS = {"expression", "operation", "precision", "variable", "lower", "upper"}
_TRANSFORMS = (auto_symbol, repeated_decimals, auto_number, rationalize, factorial_notation, convert_xor,
               implicit_multiplication)
# Constructors the parser itself emits for numbers and symbols; the only calls allowed string arguments.
_CONSTRUCTORS = {"Integer": sympy.Integer, "Float": sympy.Float, "Rational": sympy.Rational, "Symbol": sympy.Symbol}
_FUNCTIONS: dict[str, Any] = {
    name: getattr(sympy, name)
    for name in (
        "sqrt cbrt root exp log sin cos tan cot sec csc asin acos atan acot atan2 sinh cosh tanh asinh acosh atanh "
        "factorial binomial gamma floor ceiling Abs gcd lcm Mod Min Max isprime prime primepi totient factorint "
        "divisors re im arg conjugate sign Eq Sum Product summation product limit diff integrate Integral "
        "Derivative nsimplify simplify expand factor N"
    ).split()
}
_FUNCTIONS.update({"ln": sympy.log, "abs": sympy.Abs, "mod": sympy.Mod, "min": sympy.Min, "max": sympy.Max,
                   "nCr": sympy.binomial, "choose": sympy.binomial, "arcsin": sympy.asin, "arccos": sympy.acos,
                   "arctan": sympy.atan})
_CONSTANTS: dict[str, Any] = {"pi": sympy.pi, "E": sympy.E, "e": sympy.E, "I": sympy.I, "oo": sympy.oo,
                              "inf": sympy.oo, "infinity": sympy.oo, "nan": sympy.nan}
_NAMESPACE: dict[str, Any] = {**_CONSTRUCTORS, **_FUNCTIONS, **_CONSTANTS}
_CALLABLE = set(_FUNCTIONS) | {"Integer", "Rational", "Float"}
_ALLOWED_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Call, ast.Name, ast.Load, ast.Constant, ast.Tuple,
                  ast.List, ast.keyword, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.Mod, ast.FloorDiv,
                  ast.USub, ast.UAdd)


class CalculatorError(AtlasError):
    """An expression or call the calculator refuses; the message says why in one line."""


@dataclass
class CalcRequest:
    expression: str
    operation: str = "evaluate"
    precision: int = 15
    variable: str | None = None
    lower: str | None = None
    upper: str | None = None


# --- reading the call ------------------------------------------------------------------------------

def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise CalculatorError("calculator arguments must be literal values, e.g. expression=\"2**10\"") from None


def _from_mapping(data: dict[str, Any], default_precision: int) -> CalcRequest:
    unknown = set(data) - _KEYS
    if unknown:
        raise CalculatorError(f"unknown calculator argument(s): {', '.join(sorted(unknown))}; "
                              f"use {', '.join(sorted(_KEYS))}")
    expression = data.get("expression")
    if not isinstance(expression, (str, int, float)) or isinstance(expression, bool) or str(expression).strip() == "":
        raise CalculatorError("the calculator needs a non-empty 'expression'")
    operation = str(data.get("operation") or "evaluate").strip().lower()
    if operation not in OPERATIONS:
        raise CalculatorError(f"unknown operation '{operation}'; use one of: {', '.join(OPERATIONS)}")
    precision = data.get("precision", default_precision)
    if isinstance(precision, str) and precision.strip().isdigit():
        precision = int(precision)
    if not isinstance(precision, int) or isinstance(precision, bool) or not 1 <= precision <= MAX_PRECISION:
        raise CalculatorError(f"precision must be an integer from 1 to {MAX_PRECISION}, got {precision!r}")
    variable = data.get("variable")
    if variable is not None and not (isinstance(variable, str) and re.fullmatch(r"[A-Za-z]\w*", variable)):
        raise CalculatorError(f"variable must be a name like x, got {variable!r}")
    bounds = [None if data.get(k) is None else str(data[k]) for k in ("lower", "upper")]
    return CalcRequest(str(expression), operation, precision, variable, *bounds)


def parse_request(text: str, default_precision: int = 15) -> CalcRequest:
    """Read a calculator(...) call, a JSON object or a bare expression."""
    text = text.strip()
    if not text:
        raise CalculatorError("empty calculator input")
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as err:
            raise CalculatorError(f"calculator input looks like JSON but is not valid: {err}") from None
        if not isinstance(data, dict):
            raise CalculatorError("calculator JSON input must be an object with an 'expression'")
        return _from_mapping(data, default_precision)
    if re.match(r"(?:calculator|calc)\s*\(", text):
        try:
            call = ast.parse(text, mode="eval").body
        except SyntaxError:
            raise CalculatorError("cannot read the calculator call; write calculator(expression=\"...\")") from None
        if not isinstance(call, ast.Call) or call.args and len(call.args) > 1:
            raise CalculatorError("write calculator(expression=\"...\", operation=\"...\", precision=N)")
        data = {kw.arg: _literal(kw.value) for kw in call.keywords if kw.arg}
        if call.args:
            data.setdefault("expression", _literal(call.args[0]))
        return _from_mapping(data, default_precision)
    return CalcRequest(text, precision=default_precision)


def find_call(text: str) -> str | None:
    """The first complete calculator(...) call or {"expression": ...} object in model text."""
    for match in re.finditer(r"\b(?:calculator|calc)\s*\(", text):
        start = match.start()
        for end in range(match.end(), len(text)):
            if text[end] == ")":
                candidate = text[start : end + 1]
                try:
                    ast.parse(candidate, mode="eval")
                except SyntaxError:
                    continue
                return candidate
    found = first_json_object(text, lambda obj: "expression" in obj)
    return text[found[1] : found[2]] if found else None


# --- safe parsing ----------------------------------------------------------------------------------

def _check_names(expression: str) -> None:
    """Clear errors for unknown functions and dunder names before the parser rewrites them."""
    if "__" in expression:
        raise CalculatorError("names with double underscores are not allowed")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(expression).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        raise CalculatorError(f"cannot parse expression: {expression}") from None
    for tok, nxt in zip(tokens, tokens[1:]):
        if tok.type == tokenize.NAME and nxt.string == "(" and tok.string not in _CALLABLE:
            raise CalculatorError(f"unknown function '{tok.string}' (use * for products, e.g. x*(x+1))")
        if tok.type == tokenize.STRING:
            raise CalculatorError("strings are not allowed in expressions")
        if tok.type == tokenize.OP and tok.string in (".",) and nxt.type == tokenize.NAME:
            raise CalculatorError("attribute access is not allowed in expressions")
        if tok.type == tokenize.NAME and tok.string in ("lambda", "import", "if", "for", "while", "def", "class"):
            raise CalculatorError(f"'{tok.string}' is not allowed in expressions")


def _validate_code(code: str) -> ast.Expression:
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError:
        raise CalculatorError("cannot parse expression") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise CalculatorError(f"'{type(node).__name__}' is not allowed in a calculator expression")
        if isinstance(node, ast.Name) and node.id not in _NAMESPACE:
            raise CalculatorError(f"unknown name '{node.id}'")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise CalculatorError("only plain function calls are allowed")
            strings = [a for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            if strings and node.func.id not in _CONSTRUCTORS:
                raise CalculatorError("strings are not allowed in expressions")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, str)):
            raise CalculatorError(f"constant {node.value!r} is not allowed")
    _check_size(tree.body)
    return tree


def _magnitude(node: ast.AST) -> float | None:
    """log10 of a literal numeric subtree's absolute value (None when not a plain number)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return math.log10(abs(node.value)) if node.value else -math.inf
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name = node.func.id
        if name in ("Integer", "Float", "Rational") and len(node.args) == 1:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                try:
                    v = float(arg.value)
                except ValueError:
                    return None
                return math.log10(abs(v)) if v else -math.inf
            return _magnitude(arg)
        if name == "factorial" and len(node.args) == 1:
            m = _magnitude(node.args[0])
            if m is None:
                return None
            if m > 7:
                return math.inf
            n = 10**m
            return (n * math.log10(n / math.e) + 1) if n > 1 else 0.0
        return None
    if isinstance(node, ast.UnaryOp):
        return _magnitude(node.operand)
    if isinstance(node, ast.BinOp):
        a, b = _magnitude(node.left), _magnitude(node.right)
        if a is None or b is None:
            return None
        if isinstance(node.op, ast.Pow):
            if a <= 0.0 or b == -math.inf:
                return 0.0  # |base| <= 1 stays small; negative exponents shrink
            if b > 9:
                return math.inf
            return a * 10**b
        if isinstance(node.op, ast.Mult):
            return a + b
        if isinstance(node.op, (ast.Add, ast.Sub)):
            return max(a, b) + 1
        if isinstance(node.op, ast.Div):
            return a
    return None


def _check_size(node: ast.AST) -> None:
    for sub in ast.walk(node):
        m = _magnitude(sub)
        if m is not None and m > MAX_DIGITS:
            raise CalculatorError(f"the result would have more than {MAX_DIGITS} digits; refusing to compute it")


def _safe_code(expression: str) -> str:
    """The Python that sympy's parser makes of ``expression``, after every safety check."""
    _check_names(expression)
    try:
        code = stringify_expr(expression, {}, dict(_NAMESPACE), _TRANSFORMS)
    except (tokenize.TokenError, SyntaxError, TypeError, ValueError):
        raise CalculatorError(f"cannot parse expression: {expression.strip()}") from None
    _validate_code(code)
    return code


def parse_math(expression: str) -> sympy.Expr:
    """A sympy expression from text, or CalculatorError; never runs anything but allowlisted sympy."""
    code = _safe_code(expression)
    try:
        value = eval_expr(code, {}, {**_NAMESPACE, "__builtins__": {}})
    except (TypeError, ValueError, ZeroDivisionError, sympy.SympifyError, AttributeError) as err:
        raise CalculatorError(f"cannot evaluate '{expression}': {err}") from None
    try:
        return sympy.sympify(value)
    except sympy.SympifyError:
        raise CalculatorError(f"'{expression}' is not a mathematical expression") from None


def _split_top_level(text: str, sep: str = ",") -> list[str]:
    parts, depth, current = [], 0, []
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in (s.strip() for s in parts) if p]


_EQUALS = re.compile(r"(?<![<>!=])==?(?!=)")


def _equation(text: str) -> sympy.Expr:
    """``lhs = rhs`` (or ``lhs == rhs``) as ``lhs - rhs``; a plain expression means ``expr = 0``."""
    pieces = _EQUALS.split(text)
    if len(pieces) == 1:
        return parse_math(text)
    if len(pieces) != 2:
        raise CalculatorError(f"an equation needs exactly one '=': {text}")
    return parse_math(pieces[0]) - parse_math(pieces[1])


# --- operations ------------------------------------------------------------------------------------

def _variable(req: CalcRequest, exprs: list[sympy.Expr]) -> sympy.Symbol:
    if req.variable:
        return sympy.Symbol(req.variable)
    free = sorted(set().union(*(e.free_symbols for e in exprs)), key=lambda s: s.name)
    if not free:
        raise CalculatorError(f"'{req.operation}' needs a variable but the expression has none")
    names = [s.name for s in free]
    if len(free) > 1 and "x" not in names:
        raise CalculatorError(f"several variables ({', '.join(names)}); pass variable=\"...\"")
    return sympy.Symbol("x") if "x" in names else free[0]


def _decimal(value: sympy.Expr, precision: int) -> str | None:
    if not getattr(value, "is_number", False) or value.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan):
        return None
    text = str(sympy.N(value, precision))
    if isinstance(value, sympy.Rational) and "." in text and "e" not in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _int_str(n: int) -> str:
    """Decimal digits of any integer (Python refuses str() past 4300 digits)."""
    chunk = 10**4000
    if -chunk < n < chunk:
        return str(n)
    q, r = divmod(abs(n), chunk)
    return ("-" if n < 0 else "") + _int_str(q) + str(r).zfill(4000)


def _show(value: Any, max_chars: int) -> str:
    try:
        text = _int_str(int(value)) if isinstance(value, (int, sympy.Integer)) else str(value)
    except ValueError:
        return "(a number too long to print)"
    if len(text) > max_chars:
        digits = f"{len(text)} characters"
        text = f"{text[: max_chars // 2]}...{text[-max_chars // 4 :]} ({digits})"
    return text


def parse_checks(req: CalcRequest) -> None:
    """Refuse unsafe or malformed text before it reaches the worker (fast, in-process, no evaluation)."""
    parts = _split_top_level(req.expression) if req.operation == "solve" else [req.expression]
    texts = [side for part in parts for side in _EQUALS.split(part)]
    texts += [b for b in (req.lower, req.upper) if b is not None]
    for text in texts:
        _safe_code(text)


def compute(req: CalcRequest, max_chars: int = 4000) -> tuple[str, dict[str, Any]]:
    """Carry out one request; returns (output line, data) or raises CalculatorError."""
    op = req.operation
    if op == "solve":
        equations = [_equation(part) for part in _split_top_level(req.expression)]
        unknowns = ([sympy.Symbol(req.variable)] if req.variable
                    else sorted(set().union(*(e.free_symbols for e in equations)), key=lambda s: s.name))
        if not unknowns:
            raise CalculatorError("nothing to solve for: the equation has no variable")
        solutions = sympy.solve(equations, unknowns, dict=True)
        if not solutions:
            return "no solution", {"solutions": []}
        shown = [", ".join(f"{k} = {_show(v, max_chars)}" for k, v in sorted(s.items(), key=lambda kv: str(kv[0])))
                 for s in solutions]
        return " or ".join(shown), {"solutions": [{str(k): str(v) for k, v in s.items()} for s in solutions]}
    if "=" in re.sub(r"[<>!]=|==", "", req.expression):
        raise CalculatorError("the expression contains '='; use operation=\"solve\" for equations")
    expr = parse_math(req.expression)
    if op == "evaluate":
        result = expr.doit() if isinstance(expr, sympy.Basic) else expr
    elif op == "simplify":
        result = sympy.simplify(expr)
    elif op == "expand":
        result = sympy.expand(expr)
    elif op == "factor":
        if isinstance(expr, sympy.Integer):
            factors = sympy.factorint(expr)
            text = " * ".join(f"{p}**{k}" if k > 1 else str(p) for p, k in sorted(factors.items())) or str(expr)
            return text, {"exact": text, "factors": {str(p): k for p, k in factors.items()}}
        result = sympy.factor(expr)
    elif op == "diff":
        result = sympy.diff(expr, _variable(req, [expr]))
    else:  # integrate
        var = _variable(req, [expr])
        if (req.lower is None) != (req.upper is None):
            raise CalculatorError("a definite integral needs both lower and upper")
        if req.lower is not None:
            result = sympy.integrate(expr, (var, parse_math(req.lower), parse_math(req.upper)))
        else:
            result = sympy.integrate(expr, var)
    if isinstance(result, sympy.Basic) and result.has(sympy.zoo, sympy.nan):
        raise CalculatorError("undefined result (division by zero or an indeterminate form)")
    exact = _show(result, max_chars)
    decimal = _decimal(result, req.precision)
    data = {"exact": exact, "decimal": decimal}
    if decimal is None or isinstance(result, sympy.Integer) or decimal == exact:
        return exact, data
    return f"{exact} ≈ {decimal}", data
