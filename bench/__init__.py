"""In-container benchmark entrypoint.

Runs inside the benchmark containers with the standard library, numpy and one
framework. It must stay importable on Python 3.6 (CNTK 2.7's only Python) and
must never import runner, docker, pandas or jinja2.
"""

__version__ = "0.1.0"
