"""Modelport model server: serves one MLflow model version over HTTP.

A plain Python package with no Django import; it runs inside each deployment container as
``python -m serving --model-dir DIR``.
"""

__version__ = "0.1.0"
