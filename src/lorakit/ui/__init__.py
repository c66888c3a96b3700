"""`lorakit ui`: the web UI (Gradio), in English and Japanese, over lorakit.api and the job queue."""
