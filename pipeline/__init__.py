"""The data pipeline: host-side view sampling and DALI decoding with controllable augmentations.

Only this package's dali_*.py modules import DALI (arrives with the "Pipeline" issue).
"""
