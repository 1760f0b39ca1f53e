"""The engine: turns specs into running things (plans, translation to runtime specs, supervision)."""
