"""Registry of framework adapters: name -> module path.

Each module defines `Adapter`, a bench.adapters.base.Adapter subclass, and
imports its framework lazily.  A module that is not there yet (or fails to
import) yields AdapterNotAvailable with the reason, never a crash.
"""

import importlib
from collections import OrderedDict

ADAPTERS = OrderedDict([
    ("pytorch", "bench.adapters.pytorch"),
    ("tensorflow", "bench.adapters.tensorflow"),
    ("keras", "bench.adapters.keras"),
    ("mxnet", "bench.adapters.mxnet"),
    ("cntk", "bench.adapters.cntk"),
    ("jax", "bench.adapters.jax"),
])


class AdapterNotAvailable(Exception):
    pass


def adapter_class(name):
    """The Adapter class of framework `name` (imports the adapter module only)."""
    if name not in ADAPTERS:
        raise AdapterNotAvailable("adapter not available: unknown framework %r (known: %s)"
                                  % (name, ", ".join(ADAPTERS)))
    module_path = ADAPTERS[name]
    try:
        module = importlib.import_module(module_path)
    except ImportError as exc:
        raise AdapterNotAvailable("adapter not available: %s (%s: %s)"
                                  % (name, module_path, exc))
    cls = getattr(module, "Adapter", None)
    if cls is None:
        raise AdapterNotAvailable("adapter not available: %s defines no Adapter class"
                                  % module_path)
    return cls


def available():
    """name -> Adapter class or the AdapterNotAvailable message."""
    result = OrderedDict()
    for name in ADAPTERS:
        try:
            result[name] = adapter_class(name)
        except AdapterNotAvailable as exc:
            result[name] = str(exc)
    return result
