"""Offline preprocessing: raw videos and annotations -> Parquet shards, and the shard contract
(preprocessing.shards) and config validation (preprocessing.validation) the other packages use.

Imports no torch, DALI or Ray, and nothing else of ours.
"""
