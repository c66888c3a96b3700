"""The job queue: jobs in SQLite under the lorakit home, run one at a time per GPU as child processes."""
