//! Calls: the plain call model that the rules see, the registry of
//! devices, gateways and calls, outage tracking, and (later) the call flows.
//!
//! [`Call`] is the boundary type between the FreeSWITCH side and the rules engine: the call
//! flows build it from channel data, the rules read it. It knows nothing of the wire.

mod control;
pub mod flow;
pub mod link;
pub mod mailbox;
mod model;
pub mod outage;
pub mod registry;
pub mod session;
pub mod story;

pub use control::{
    BridgeOutcome, BridgeRequest, CallControl, CallEvent, ControlError, ControlFuture,
    DigitsRequest, PlaybackOutcome, RecordOutcome, RecordRequest, TransferredAway,
};
pub use model::{Call, Origin};
