"""The discrete-event fleet simulator (:mod:`.engine`)."""
