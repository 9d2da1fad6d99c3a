"""Offline preprocessing: raw videos and annotations -> Parquet shards (arrives with its issue).

Imports no torch, DALI or Ray, and nothing else of ours.
"""
