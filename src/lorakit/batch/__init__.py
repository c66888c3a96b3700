"""`lorakit batch`: unattended runs of remote training folders (remote sync, safe unzip, OOM retries)."""
