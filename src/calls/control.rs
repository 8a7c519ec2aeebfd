//! The call-control seam: what a call flow can ask of one live call, without knowing the wire.
//!
//! [`CallControl`] is implemented by the ESL outbound session (`freeswitch::esl::outbound`) and
//! by whatever fake a flow test wants; call flows hold it as `Arc<dyn CallControl>`. Every method
//! runs one dialplan application to its end (apps run for minutes, so there is no short
//! timeout) and reports what happened in plain types. Invariant: once the channel has hung up,
//! every pending and later request fails promptly with [`ControlError::HungUp`] instead of
//! waiting forever.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::broadcast;

/// The boxed future every [`CallControl`] method returns (object safe, `Send`).
pub type ControlFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ControlError>> + Send + 'a>>;

/// What went wrong while controlling a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The channel is gone; nothing more can be done on it.
    #[error("call {uuid}: the channel hung up ({cause})")]
    HungUp { uuid: String, cause: String },
    /// FreeSWITCH refused the request.
    #[error("call {uuid}: FreeSWITCH refused {app}: {reply}")]
    Refused {
        uuid: String,
        app: String,
        reply: String,
    },
    /// The connection to FreeSWITCH broke.
    #[error("call {uuid}: connection to FreeSWITCH lost: {reason}")]
    Link { uuid: String, reason: String },
    /// A caller-supplied value cannot go on the wire (e.g. it holds a newline).
    #[error("call {uuid}: {what} (refused before sending)")]
    InvalidArgument { uuid: String, what: String },
}

impl ControlError {
    /// Whether the call itself is over (as opposed to one request failing).
    pub fn is_hangup(&self) -> bool {
        matches!(
            self,
            ControlError::HungUp { .. } | ControlError::Link { .. }
        )
    }
}

/// How a `playback` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaybackOutcome {
    /// The whole file was played (or a terminator digit stopped it on purpose).
    Played,
    /// FreeSWITCH could not find the file.
    NotFound,
    /// Playback broke off, typically because the caller hung up.
    Interrupted { response: String },
}

/// What to record and when to stop.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordRequest {
    /// Where FreeSWITCH writes the file (a path FreeSWITCH can write to).
    pub path: String,
    /// Longest recording.
    pub max: Duration,
    /// Energy threshold for silence detection (200-500 is typical); `None` turns it off.
    pub silence_threshold: Option<u32>,
    /// How long the silence must last to stop the recording.
    pub silence: Duration,
}

/// How a `record` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordOutcome {
    /// Length of the recording in milliseconds, as FreeSWITCH reports it (`record_ms`).
    pub ms: u64,
    /// The path that was recorded to.
    pub path: String,
    /// Whether the silence detector ended it.
    pub stopped_by_silence: bool,
    /// Whether the caller hung up during the recording (the file is still there).
    pub caller_hung_up: bool,
}

/// Ring one or more endpoints at once; the first to answer is bridged.
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeRequest {
    /// Dial strings such as `user/1000@example.com` or `sofia/gateway/did1/+15145550100`.
    pub endpoints: Vec<String>,
    /// Channel variables of one endpoint's leg only (`[name=value]` before it), by index;
    /// it may be shorter than `endpoints`.
    pub leg_variables: Vec<Vec<(String, String)>>,
    /// How long each endpoint rings.
    pub timeout: Duration,
    /// Channel variables for the new legs (`{name=value}` in the dial string).
    pub variables: Vec<(String, String)>,
}

/// How a `bridge` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeOutcome {
    /// Someone answered and the call was bridged; it returns once the bridge ends.
    Answered {
        /// Index into [`BridgeRequest::endpoints`] of the endpoint that answered, when it
        /// could be told from the channel name.
        endpoint: Option<usize>,
        /// FreeSWITCH's name of the answering channel (`sofia/internal/1000@...`).
        channel: String,
        /// Unique-ID of the answering leg.
        other_uuid: Option<String>,
        /// The answering leg's hangup cause when it ended the bridge (`last_bridge_hangup_cause`:
        /// NORMAL_CLEARING for a hang-up, MEDIA_TIMEOUT when its media stopped, ...); `None`
        /// when the bridge ended otherwise (the caller hung up, a transfer).
        ended_by: Option<String>,
        /// FreeSWITCH moved the caller elsewhere during the bridge (a device's SIP REFER):
        /// the call goes on in a new dialplan run, no longer on this socket.
        transferred: Option<TransferredAway>,
    },
    /// Nobody answered: `cause` is FreeSWITCH's (NO_ANSWER, USER_BUSY, ...).
    Failed { cause: String },
}

/// Where FreeSWITCH transferred a call (from `transfer_source`, `sip_refer_to`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferredAway {
    /// The extension or number the call went to.
    pub destination: String,
    /// The Refer-To of the REFER that asked for it, when one did (untrusted).
    pub refer_to: Option<String>,
}

/// Collect DTMF digits, optionally while playing a prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct DigitsRequest {
    pub min: u32,
    pub max: u32,
    /// How long to wait for the digits.
    pub timeout: Duration,
    /// Digits that end the input (e.g. `#`).
    pub terminators: String,
    /// Prompt to play first; `None` plays silence.
    pub prompt: Option<String>,
}

/// Things that happen on a call while a flow controls it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    Answered,
    /// A DTMF digit from the caller.
    Dtmf {
        digit: char,
    },
    Bridged {
        other_uuid: Option<String>,
    },
    Unbridged,
    /// The channel hung up (CHANNEL_HANGUP).
    HungUp {
        cause: String,
    },
    /// FreeSWITCH is done with the channel (CHANNEL_HANGUP_COMPLETE); no more events follow.
    Finished {
        cause: String,
    },
}

/// What a call flow can do with one live call.
pub trait CallControl: Send + Sync {
    /// FreeSWITCH's Unique-ID of the channel.
    fn uuid(&self) -> &str;
    fn answer(&self) -> ControlFuture<'_, ()>;
    /// Play a file (or a `tone_stream://`) to the caller.
    fn playback<'a>(&'a self, path: &'a str) -> ControlFuture<'a, PlaybackOutcome>;
    fn record<'a>(&'a self, request: &'a RecordRequest) -> ControlFuture<'a, RecordOutcome>;
    fn bridge<'a>(&'a self, request: &'a BridgeRequest) -> ControlFuture<'a, BridgeOutcome>;
    /// Hang up with a FreeSWITCH cause name (`NORMAL_CLEARING`, `CALL_REJECTED`, ...).
    fn hangup<'a>(&'a self, cause: &'a str) -> ControlFuture<'a, ()>;
    /// The digits entered, or `None` when nothing valid came before the timeout.
    fn get_digits<'a>(&'a self, request: &'a DigitsRequest) -> ControlFuture<'a, Option<String>>;
    fn set_var<'a>(&'a self, name: &'a str, value: &'a str) -> ControlFuture<'a, ()>;
    /// Hang up another leg of this call (the bridged device's) with a FreeSWITCH cause; a
    /// leg that is already gone is not an error.
    fn kill_leg<'a>(&'a self, uuid: &'a str, cause: &'a str) -> ControlFuture<'a, ()>;
    /// Move another leg of this call (the bridged device's) into conference `room`; the
    /// bridge with it ends and this channel stays where it is.
    fn move_leg_to_conference<'a>(&'a self, uuid: &'a str, room: &'a str) -> ControlFuture<'a, ()>;
    /// Join this channel to conference `room` (`name@profile+flags{...}`); returns once it has
    /// left the room (the conference ended, or the channel hung up).
    fn conference<'a>(&'a self, room: &'a str) -> ControlFuture<'a, ()>;
    /// Ring `dial` into conference `room`; whether it answered and joined.
    fn dial_into_conference<'a>(&'a self, room: &'a str, dial: &'a str) -> ControlFuture<'a, bool>;
    /// Starts recording the whole conversation into `path` in the background
    /// (`record_session`), from the moment the call is answered; it stops at hangup.
    fn record_session<'a>(&'a self, path: &'a str) -> ControlFuture<'a, ()>;
    /// Stops a [`CallControl::record_session`] early (`stop_record_session`).
    fn stop_record_session<'a>(&'a self, path: &'a str) -> ControlFuture<'a, ()>;
    /// Events of this call from now on (DTMF, answer, bridge, hangup).
    fn subscribe(&self) -> broadcast::Receiver<CallEvent>;
}
