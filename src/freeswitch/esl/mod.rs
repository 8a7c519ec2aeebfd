//! Event Socket Library: frames, commands, events, the inbound client and the outbound server.
//!
//! Layering follows mini-redis: [`frame`] decodes and encodes bytes without I/O, [`command`]
//! builds every command that goes on the wire, [`event`] turns wire events into plain types
//! ([`scan`] reads the inbound link's channel events in one pass, decoding only what is kept),
//! [`inbound`] is the long-lived client to FreeSWITCH's :8021 and [`outbound`] serves the
//! per-call sockets that the dialplan's `socket` app opens.

pub mod command;
pub mod event;
pub mod frame;
pub mod inbound;
pub mod outbound;
pub mod scan;
