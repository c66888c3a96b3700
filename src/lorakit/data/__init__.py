"""Model-agnostic data: scanning, captions, buckets, sampling, transforms. Pure: paths and numbers in, plain data out."""
