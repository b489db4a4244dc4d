"""Print the erfc(x)*exp(x*x) piecewise polynomial tables of special._ERFC_PIECES (needs mpmath;
    run: .venv/bin/python tests/backends/fit_erf.py).

Each piece is the polynomial in s = x - center interpolating h(x) = erfc(x) e^{x^2} at
Chebyshev nodes (50 digits), coefficients rounded to double; a piece is made as long as its
error (coefficients as rounded, relative to h) stays below what erf can feel there:
0.05 ulp of erf(x) relative to erfc(x), where erfc is largest in the piece."""
import mpmath as mp

mp.mp.dps = 50
TOLF = 0.05


def h(x):
    return mp.erfc(x) * mp.exp(x * x)


def fit(a, b, deg):
    c = (mp.mpf(a) + b) / 2
    hw = (mp.mpf(b) - a) / 2
    nodes = [c + hw * mp.cos(mp.pi * (k + mp.mpf(1) / 2) / (deg + 1)) for k in range(deg + 1)]
    A = mp.matrix([[(x - c) ** j for j in range(deg + 1)] for x in nodes])
    co = mp.lu_solve(A, mp.matrix([h(x) for x in nodes]))
    cf = [float(co[j]) for j in range(deg + 1)]
    xs = [mp.mpf(a) + (mp.mpf(b) - a) * k / 400 for k in range(401)]
    err = max(abs(sum(mp.mpf(cf[j]) * (x - c) ** j for j in range(deg + 1)) - h(x)) / h(x)
              for x in xs)
    return float(c), cf, err


def table(start, stop, deg, ulp):
    pieces, a = [], start
    while a < stop:
        tol = TOLF * ulp / float(mp.erfc(a))
        b = stop
        while True:
            c, cf, err = fit(a, b, deg)
            if err <= tol:
                break
            b = a + (b - a) * 0.9
        pieces.append((a, b, c, cf, err))
        a = b
    return pieces


for name, start, stop, deg, ulp in [("f64", 0.75, 5.95, 17, 2.0**-53),
                                    ("f32", 0.75, 3.95, 9, 2.0**-24)]:
    for a, b, c, cf, err in table(start, stop, deg, ulp):
        print(name, round(a, 6), round(b, 6), c, err)
        print("   ", [float.hex(v) for v in cf])
