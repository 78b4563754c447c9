"""Type hints: every public function of core/ and metrics/ is annotated, and mypy (configured in
pyproject.toml) finds nothing.

Public: a module-level function, or a method (``__init__`` included) of a module-level class, whose
name does not start with an underscore, defined in that module (names imported from elsewhere
are checked where they are defined). Every parameter but the first of a method (self, cls),
``*args`` and ``**kwargs`` included, and the return need a hint.
"""
import gc
import importlib
import inspect
import pathlib
import pkgutil
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ('core', 'metrics')

def module_names():
    """Every module of the packages, the packages themselves included, by dotted name."""
    names = []
    for package in PACKAGES:
        names.append(package)
        names += [m.name for m in pkgutil.walk_packages([str(ROOT / package)], prefix=f'{package}.')]
    return names


def _functions_of(member):
    """The plain functions behind a class or module attribute (static and class methods,
    property accessors, decorated functions unwrapped)."""
    if isinstance(member, (staticmethod, classmethod)):
        member = member.__func__
    found = [member.fget, member.fset, member.fdel] if isinstance(member, property) else [member]
    found = [inspect.unwrap(f) if callable(f) else f for f in found if f is not None]
    return [f for f in found if inspect.isfunction(f)]


def public_functions(module):
    """[(qualified name, function, skip first parameter)] of the public functions and methods
    defined in ``module``."""
    found = []
    for name, obj in vars(module).items():
        if name.startswith('_'):
            continue
        if inspect.isclass(obj):
            if obj.__module__ != module.__name__:
                continue
            for attr, member in vars(obj).items():
                if attr.startswith('_') and attr != '__init__':
                    continue
                bound = not isinstance(member, staticmethod)
                found += [(f'{name}.{attr}', f, bound) for f in _functions_of(member)
                          if f.__module__ == module.__name__]
        else:
            found += [(name, f, False) for f in _functions_of(obj) if f.__module__ == module.__name__]
    return found


def missing_hints(func, bound):
    """Names of the parameters of ``func`` without a hint, 'return' when the return has none."""
    sig = inspect.signature(func, follow_wrapped=False)
    params = list(sig.parameters.values())[1 if bound else 0:]
    missing = [p.name for p in params if p.annotation is inspect.Parameter.empty]
    if sig.return_annotation is inspect.Signature.empty:
        missing.append('return')
    return missing


def unannotated(name):
    """{'module.function': [missing hints]} of module ``name``."""
    module = importlib.import_module(name)
    return {f'{name}.{qualname}': missing
            for qualname, func, bound in public_functions(module)
            if (missing := missing_hints(func, bound))}


def test_every_public_function_has_hints():
    names = module_names()
    assert {'core.io.files', 'metrics.eval'} <= set(names)
    missing = {}
    for name in names:
        missing.update(unannotated(name))
    lines = [f'{func}: {", ".join(params)}' for func, params in sorted(missing.items())]
    assert not missing, 'public functions without type hints (parameters / return):\n' + '\n'.join(lines)


def test_the_check_sees_missing_hints():
    """The walk finds functions, methods and decorated functions, and what they lack."""
    import core.io.files
    import metrics.lpips
    names = {qualname for qualname, _, _ in public_functions(metrics.lpips)}
    assert {'normalize', 'LPIPS.__init__', 'LPIPS.features', 'build_lpips', 'calculate_lpips_given_images'} <= names
    assert 'as_device' not in names  # imported from core.device: checked there
    assert not any(q.startswith('_') for q in names)
    assert 'atomic_write' in {q for q, _, _ in public_functions(core.io.files)}

    class Example:
        def __init__(self, a, b: int):
            pass

        @staticmethod
        def helper(x: int, *rest) -> int:
            return x

        @property
        def size(self) -> int:
            return 0

    assert missing_hints(Example.__init__, True) == ['a', 'return']
    assert missing_hints(vars(Example)['helper'].__func__, False) == ['rest']
    assert missing_hints(Example.size.fget, True) == []


@pytest.fixture
def process_state(monkeypatch):
    """What mypy's in-process run changes for the rest of the session (the garbage collector's
    thresholds, the recursion limit, an environment variable), restored after the test."""
    threshold, limit = gc.get_threshold(), sys.getrecursionlimit()
    monkeypatch.delenv('MYPY_CONFIG_FILE_DIR', raising=False)
    yield
    gc.set_threshold(*threshold)
    sys.setrecursionlimit(limit)


def test_mypy_is_clean(monkeypatch, process_state):
    """``python3 -m mypy`` (what CI runs) over core/ and metrics/, with pyproject.toml's settings.
    About 0.5 s with mypy's cache (.mypy_cache) up to date, about 13 s without."""
    api = pytest.importorskip('mypy.api', reason='mypy is not installed (CI installs it: .ci/run)')
    monkeypatch.chdir(ROOT)
    start = time.monotonic()
    stdout, stderr, status = api.run([])
    report = stdout + stderr
    assert status == 0, f'mypy found problems ({time.monotonic() - start:.0f} s):\n{report}'
