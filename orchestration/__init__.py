"""Running things: the command line, training loops and (later) Ray Train and MLflow.

The only package allowed to import Ray and MLflow.
"""
