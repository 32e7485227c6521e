"""Incoming provider events: the intake verifies and stores them (:mod:`.intake`), the
queue's sweep applies them (:mod:`.queue`) through the handlers (:mod:`.handlers`)."""
