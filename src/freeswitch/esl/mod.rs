//! Event Socket Library: frames, commands, events, the inbound client and the outbound server.
