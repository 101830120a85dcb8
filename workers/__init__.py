"""Worker processes that host the workflows and activities."""
