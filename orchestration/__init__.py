"""Running things: the `ctrlaug` command, the training loops and their runtimes (this process
or Ray Train), checkpoints, MLflow tracking, evaluation, the ablations and the demo.

The only package allowed to import Ray and MLflow.
"""
