"""Polynomials in config sizes: a parameter count is a sum of products of sizes that are linear in the pruned
widths, so it can be written down once and evaluated exactly over a whole grid of shapes (numpy arrays)."""

from __future__ import annotations

from collections.abc import Mapping

# A monomial is a sorted tuple of (variable, exponent) pairs (exponents may be negative: k / E for experts);
# a polynomial maps monomials to coefficients. () is the constant term.
Monomial = tuple[tuple[str, int], ...]
Polynomial = dict[Monomial, float]


def constant(value: float) -> Polynomial:
    return {(): float(value)} if value else {}


def linear(coefficients: Mapping[str, float], offset: float = 0.0) -> Polynomial:
    """`offset + sum(c * x)`."""
    out = constant(offset)
    for var, c in coefficients.items():
        if c:
            out[((var, 1),)] = out.get(((var, 1),), 0.0) + float(c)
    return out


def _times(a: Monomial, b: Monomial) -> Monomial:
    exps = dict(a)
    for var, e in b:
        exps[var] = exps.get(var, 0) + e
    return tuple(sorted((v, e) for v, e in exps.items() if e))


def multiply(a: Polynomial, b: Polynomial) -> Polynomial:
    out: Polynomial = {}
    for ma, ca in a.items():
        for mb, cb in b.items():
            m = _times(ma, mb)
            out[m] = out.get(m, 0.0) + ca * cb
    return {m: c for m, c in out.items() if c}


def add(a: Polynomial, b: Polynomial, scale: float = 1.0) -> Polynomial:
    out = dict(a)
    for m, c in b.items():
        out[m] = out.get(m, 0.0) + scale * c
    return {m: c for m, c in out.items() if c}


def times_power(poly: Polynomial, var: str, power: int, scale: float = 1.0) -> Polynomial:
    """`scale * poly * var**power`."""
    return {_times(m, ((var, power),)): c * scale for m, c in poly.items()}


def variables(poly: Polynomial) -> set[str]:
    return {var for m in poly for var, _ in m}


def frozen(poly: Polynomial) -> tuple:
    """A hashable, order-independent form (to group identical layers)."""
    return tuple(sorted(poly.items()))


def evaluate(poly: Polynomial, values: Mapping):
    """The value at `values` (numbers or numpy arrays, which broadcast), computed in float64."""
    total = 0.0
    for monomial, c in poly.items():
        term = c
        for var, e in monomial:
            x = values[var]
            x = x.astype("float64") if hasattr(x, "astype") else float(x)
            term = term * x**e
        total = total + term
    return total
