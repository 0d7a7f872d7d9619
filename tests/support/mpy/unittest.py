# Minimal unittest for MicroPython, which ships none. Only on MICROPYPATH for
# the Unix port: CPython keeps using the real unittest, so unit tests are
# written once against the common subset implemented here.
import sys


class SkipTest(Exception):
    pass


class _AssertRaises:
    def __init__(self, tc, exc):
        self.tc = tc
        self.expected = exc
        self.exception = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, tb):
        if exc_type is None:
            self.tc.fail("%s not raised" % _name(self.expected))
        if not issubclass(exc_type, self.expected):
            return False  # let the unexpected exception propagate as an error
        # MicroPython may pass only the type; make .exception usable anyway.
        self.exception = exc_value if exc_value is not None else exc_type()
        return True


def _name(exc):
    if isinstance(exc, tuple):
        return " or ".join(e.__name__ for e in exc)
    return exc.__name__


class TestCase:
    failureException = AssertionError

    @classmethod
    def setUpClass(cls):
        pass

    @classmethod
    def tearDownClass(cls):
        pass

    def setUp(self):
        pass

    def tearDown(self):
        pass

    def skipTest(self, reason):
        raise SkipTest(reason)

    def fail(self, msg=None):
        raise AssertionError(msg or "fail")

    def _check(self, ok, default, msg):
        if not ok:
            raise AssertionError(msg if msg is not None else default)

    def assertEqual(self, a, b, msg=None):
        self._check(a == b, "%r != %r" % (a, b), msg)

    def assertNotEqual(self, a, b, msg=None):
        self._check(a != b, "%r == %r" % (a, b), msg)

    def assertTrue(self, x, msg=None):
        self._check(x, "%r is not true" % (x,), msg)

    def assertFalse(self, x, msg=None):
        self._check(not x, "%r is not false" % (x,), msg)

    def assertIs(self, a, b, msg=None):
        self._check(a is b, "%r is not %r" % (a, b), msg)

    def assertIsNot(self, a, b, msg=None):
        self._check(a is not b, "%r is %r" % (a, b), msg)

    def assertIsNone(self, x, msg=None):
        self._check(x is None, "%r is not None" % (x,), msg)

    def assertIsNotNone(self, x, msg=None):
        self._check(x is not None, "unexpectedly None", msg)

    def assertIn(self, a, b, msg=None):
        self._check(a in b, "%r not found in %r" % (a, b), msg)

    def assertNotIn(self, a, b, msg=None):
        self._check(a not in b, "%r unexpectedly found in %r" % (a, b), msg)

    def assertIsInstance(self, x, cls, msg=None):
        self._check(isinstance(x, cls), "%r is not an instance of %r" % (x, cls), msg)

    def assertGreater(self, a, b, msg=None):
        self._check(a > b, "%r not greater than %r" % (a, b), msg)

    def assertGreaterEqual(self, a, b, msg=None):
        self._check(a >= b, "%r not greater than or equal to %r" % (a, b), msg)

    def assertLess(self, a, b, msg=None):
        self._check(a < b, "%r not less than %r" % (a, b), msg)

    def assertLessEqual(self, a, b, msg=None):
        self._check(a <= b, "%r not less than or equal to %r" % (a, b), msg)

    def assertAlmostEqual(self, a, b, places=None, msg=None, delta=None):
        if a == b:
            return
        if delta is not None:
            ok, what = abs(a - b) <= delta, "within %r delta" % delta
        else:
            places = 7 if places is None else places
            ok, what = round(abs(a - b), places) == 0, "within %r places" % places
        self._check(ok, "%r != %r %s" % (a, b, what), msg)

    def assertRaises(self, exc, func=None, *args, **kwargs):
        ctx = _AssertRaises(self, exc)
        if func is None:
            return ctx
        with ctx:
            func(*args, **kwargs)
        return ctx.exception


def skip(reason):
    def deco(f):
        def skipped(*a, **kw):
            raise SkipTest(reason)
        return skipped
    return deco


def skipIf(cond, reason):
    return skip(reason) if cond else (lambda f: f)


def skipUnless(cond, reason):
    return skipIf(not cond, reason)


class TestResult:
    def __init__(self):
        self.testsRun = 0
        self.failures = []
        self.errors = []
        self.skipped = []

    def wasSuccessful(self):
        return not self.failures and not self.errors


def _test_classes(module):
    out = []
    for name in dir(module):
        obj = getattr(module, name)
        if isinstance(obj, type) and issubclass(obj, TestCase) and obj is not TestCase:
            out.append(obj)
    out.sort(key=lambda c: c.__name__)
    return out


def _run_one(cls, name, result):
    label = "%s.%s" % (cls.__name__, name)
    result.testsRun += 1
    try:
        tc = cls()
        tc.setUp()
        try:
            getattr(tc, name)()
        finally:
            tc.tearDown()
    except SkipTest as e:
        result.skipped.append((label, str(e)))
        print("skip", label, "-", e)
    except AssertionError as e:
        result.failures.append(label)
        print("FAIL:", label)
        sys.print_exception(e)
    except Exception as e:
        result.errors.append(label)
        print("ERROR:", label)
        sys.print_exception(e)


def run(module):
    result = TestResult()
    for cls in _test_classes(module):
        names = [n for n in sorted(dir(cls)) if n.startswith("test") and callable(getattr(cls, n))]
        try:
            cls.setUpClass()
        except Exception as e:
            result.errors.append(cls.__name__ + ".setUpClass")
            print("ERROR:", cls.__name__ + ".setUpClass")
            sys.print_exception(e)
            continue
        for name in names:
            _run_one(cls, name, result)
        cls.tearDownClass()
    return result


def main(module="__main__", exit=True):
    if isinstance(module, str):
        module = __import__(module)
    result = run(module)
    # tests/host/test_unit_on_micropython.py parses these lines.
    print("-" * 70)
    print("Ran %d tests" % result.testsRun)
    if result.wasSuccessful():
        print("OK" + (" (skipped=%d)" % len(result.skipped) if result.skipped else ""))
    else:
        print("FAILED (failures=%d, errors=%d)" % (len(result.failures), len(result.errors)))
    if exit and not result.wasSuccessful():
        sys.exit(1)
    return result
