"""The harness's lm-eval task files, installed as the package ``harness._tasks`` (see pyproject.toml).

A regular package, not a bare folder, because setuptools' editable installs cannot import a mapped
namespace package: with this file a wheel and ``pip install -e .`` find the same files the same way.
"""
