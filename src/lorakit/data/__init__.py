"""Model-agnostic data: scanning, captions, buckets, sampling, transforms, prepare, cache.

Pure: paths and numbers in, plain data out. Only `cache` imports torch.
"""
