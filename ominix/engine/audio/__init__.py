"""Speech in and out: decoding and resampling (PyAV), features, windows, transcribe and speak jobs."""
