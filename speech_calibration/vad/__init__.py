"""The reference voice-activity detectors (Silero, WebRTC) and their scoring in the predictions schema."""
