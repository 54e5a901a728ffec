"""The trace book (every canary's sightings per stage) and the stage table it is laid out by."""
