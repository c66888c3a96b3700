"""`lorakit train`, `lorakit generate`, `lorakit demo`."""
