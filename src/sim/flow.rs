//! Call flows: inbound calls to the application's outbound socket, dialplan apps, bridges.

use std::sync::Arc;

use super::Inner;

/// The originate API.
pub(crate) async fn originate(inner: &Arc<Inner>, args: &str) -> Result<String, String> {
    let _ = (inner, args);
    Err("SUBSCRIBER_ABSENT".to_owned())
}

/// Starts the scenario's registrations, gateways and calls (filled in by the next commit).
pub(crate) fn run_scenario(inner: Arc<Inner>) {
    let _ = inner;
}
