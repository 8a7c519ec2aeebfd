//! The call flows: what patchbay does with a live call once the rules have decided.
//!
//! A flow gets a [`CallControl`] (the live call, wire-free) and a plan in plain values
//! (which dial strings to ring and for how long, which greeting, why voicemail), runs it, and
//! reports what happened as an outcome for the call record and the journal story. It knows
//! nothing of Rhai or ESL. Invariant: every path ends in exactly one outcome, and a caller who
//! hangs up never leaves a flow waiting.

use std::time::Duration;

use super::control::{
    BridgeOutcome, BridgeRequest, CallControl, ControlError, PlaybackOutcome, RecordRequest,
};
use super::story::Story;
use crate::journal::{clock_duration, human_duration};

/// Something to ring, with the name the person knows it by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    /// "desk", "cell", or the extension.
    pub label: String,
    /// FreeSWITCH dial string: `user/1000@example.com`, `sofia/gateway/did1/+15145550199`.
    pub dial: String,
}

/// Why a call goes straight to voicemail without ringing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StraightToVoicemail {
    /// A rule set `decline`.
    Declined,
    /// The person is already on a call.
    Busy,
    /// No device is registered and nothing else is set to ring.
    NothingToRing,
    /// Do-not-disturb is on and the rules declined the call for it.
    DoNotDisturb,
}

/// How voicemail records.
#[derive(Clone, Debug, PartialEq)]
pub struct VoicemailSettings {
    /// Longest message.
    pub max: Duration,
    /// Energy threshold of the silence detector.
    pub silence_threshold: u32,
    /// Silence that ends the message.
    pub silence: Duration,
    /// Shorter recordings are hang-ups, not messages.
    pub min_length: Duration,
    /// Played after the greeting.
    pub beep: String,
}

impl Default for VoicemailSettings {
    fn default() -> Self {
        VoicemailSettings {
            max: Duration::from_secs(300),
            silence_threshold: 200,
            silence: Duration::from_secs(5),
            min_length: Duration::from_secs(2),
            beep: "tone_stream://%(250,0,1000)".to_owned(),
        }
    }
}

/// What to do with a call from outside.
#[derive(Clone, Debug, PartialEq)]
pub struct InboundPlan {
    pub ring: Vec<Ring>,
    /// How long to ring before voicemail (`voicemail_delay`).
    pub ring_for: Duration,
    /// Skip ringing, for this reason.
    pub straight_to_voicemail: Option<StraightToVoicemail>,
    /// The greeting to play (a path FreeSWITCH reads); `None` plays only the beep.
    pub greeting: Option<String>,
    /// Where the voicemail is recorded (a path FreeSWITCH writes).
    pub recording_path: String,
    pub voicemail: VoicemailSettings,
    /// Record the conversation into this file when a device answers (rules' `record`).
    pub conversation_path: Option<String>,
}

/// Why nobody heard from the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MissedReason {
    /// The caller hung up while the devices rang.
    HungUpWhileRinging,
    /// The caller hung up during the greeting.
    HungUpDuringGreeting,
    /// The caller left less than the minimum: a hang-up, not a message.
    TooShort { ms: u64 },
}

/// How an inbound call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboundOutcome {
    /// Someone picked up.
    Answered {
        /// The label of the device (or number) that answered, when known.
        by: Option<String>,
        /// Where the conversation was recorded, when the plan asked for it.
        conversation: Option<String>,
    },
    /// A message was left.
    Voicemail {
        path: String,
        ms: u64,
        /// Why it went to voicemail: `None` when nobody answered in time.
        reason: Option<StraightToVoicemail>,
    },
    Missed(MissedReason),
}

/// Whether the answering channel (`sofia/internal/1000@10.0.0.2:5060`) is this ring's
/// (`user/1000@example.com`): the user part of a `user/` dial string names the device.
fn answered_by(ring: &Ring, channel: &str) -> bool {
    let Some(user) = ring
        .dial
        .rsplit('}')
        .next()
        .and_then(|dial| dial.strip_prefix("user/"))
    else {
        return false;
    };
    let user = user.split('@').next().unwrap_or(user);
    channel.contains(&format!("/{user}@"))
}

/// Runs an inbound call: ring, then voicemail; adds its steps to `story`.
pub async fn inbound(
    control: &dyn CallControl,
    plan: &InboundPlan,
    story: &mut Story,
) -> Result<InboundOutcome, ControlError> {
    let reason = match plan.straight_to_voicemail {
        Some(reason) => {
            story.step(match reason {
                StraightToVoicemail::Declined => "declined by your rules",
                StraightToVoicemail::Busy => "you were on another call",
                StraightToVoicemail::NothingToRing => "no device was registered",
                StraightToVoicemail::DoNotDisturb => "do-not-disturb was on",
            });
            Some(reason)
        }
        None if plan.ring.is_empty() => {
            story.step("no device was registered");
            Some(StraightToVoicemail::NothingToRing)
        }
        None => {
            let labels: Vec<&str> = plan.ring.iter().map(|ring| ring.label.as_str()).collect();
            story.step(format!("rang {}", labels.join(", ")));
            let mut recording = None;
            if let Some(path) = &plan.conversation_path {
                match control.record_session(path).await {
                    Ok(()) => recording = Some(path.clone()),
                    Err(error) if error.is_hangup() => {
                        story.step("the caller hung up while it rang");
                        return Ok(InboundOutcome::Missed(MissedReason::HungUpWhileRinging));
                    }
                    // Better an unrecorded call than a caller who never gets through.
                    Err(error) => tracing::warn!("not recording the conversation: {error}"),
                }
            }
            let request = BridgeRequest {
                endpoints: plan.ring.iter().map(|ring| ring.dial.clone()).collect(),
                timeout: plan.ring_for,
                // originate_timeout bounds the whole attempt (the legs carry leg_timeout).
                variables: vec![(
                    "originate_timeout".to_owned(),
                    plan.ring_for.as_secs().max(1).to_string(),
                )],
            };
            match control.bridge(&request).await {
                Ok(BridgeOutcome::Answered {
                    endpoint, channel, ..
                }) => {
                    let by = endpoint
                        .and_then(|index| plan.ring.get(index))
                        .or_else(|| plan.ring.iter().find(|ring| answered_by(ring, &channel)))
                        .map(|ring| ring.label.clone());
                    story.step(match &by {
                        Some(label) => format!("answered on {label}"),
                        None => "answered".to_owned(),
                    });
                    if let Some(path) = &recording {
                        story.step(format!("conversation recorded in {path}"));
                    }
                    return Ok(InboundOutcome::Answered {
                        by,
                        conversation: recording,
                    });
                }
                Ok(BridgeOutcome::Failed { cause }) if cause == "ORIGINATOR_CANCEL" => {
                    story.step("the caller hung up while it rang");
                    return Ok(InboundOutcome::Missed(MissedReason::HungUpWhileRinging));
                }
                Ok(BridgeOutcome::Failed { cause }) => {
                    story.step(if cause == "NO_ANSWER" || cause == "ALLOTTED_TIMEOUT" {
                        format!("no answer after {}", human_duration(plan.ring_for))
                    } else {
                        format!("no answer ({})", cause.to_lowercase().replace('_', " "))
                    });
                    if let Some(path) = &recording {
                        // Voicemail answers the call next: that is the message, not a
                        // conversation.
                        match control.stop_record_session(path).await {
                            Ok(()) => {}
                            Err(error) if error.is_hangup() => {
                                story.step("hung up during the greeting");
                                return Ok(InboundOutcome::Missed(
                                    MissedReason::HungUpDuringGreeting,
                                ));
                            }
                            Err(error) => tracing::warn!("{error}"),
                        }
                    }
                    None
                }
                Err(error) if error.is_hangup() => {
                    story.step("the caller hung up while it rang");
                    return Ok(InboundOutcome::Missed(MissedReason::HungUpWhileRinging));
                }
                Err(error) => return Err(error),
            }
        }
    };
    voicemail(control, plan, reason, story).await
}

async fn voicemail(
    control: &dyn CallControl,
    plan: &InboundPlan,
    reason: Option<StraightToVoicemail>,
    story: &mut Story,
) -> Result<InboundOutcome, ControlError> {
    let hung_up_during_greeting = |story: &mut Story| {
        story.step("hung up during the greeting");
        Ok(InboundOutcome::Missed(MissedReason::HungUpDuringGreeting))
    };
    match control.answer().await {
        Ok(()) => {}
        Err(error) if error.is_hangup() => return hung_up_during_greeting(story),
        Err(error) => return Err(error),
    }
    for sound in plan
        .greeting
        .iter()
        .chain(std::iter::once(&plan.voicemail.beep))
    {
        match control.playback(sound).await {
            Ok(PlaybackOutcome::Played) => {}
            Ok(PlaybackOutcome::NotFound) => {
                // A missing greeting must not cost the person the message: go on to record.
                tracing::warn!("greeting {sound} not found; recording without it");
            }
            Ok(PlaybackOutcome::Interrupted { .. }) => return hung_up_during_greeting(story),
            Err(error) if error.is_hangup() => return hung_up_during_greeting(story),
            Err(error) => return Err(error),
        }
    }
    let request = RecordRequest {
        path: plan.recording_path.clone(),
        max: plan.voicemail.max,
        silence_threshold: Some(plan.voicemail.silence_threshold),
        silence: plan.voicemail.silence,
    };
    let recorded = match control.record(&request).await {
        Ok(recorded) => recorded,
        Err(error) if error.is_hangup() => {
            story.step("hung up before the beep ended");
            return Ok(InboundOutcome::Missed(MissedReason::TooShort { ms: 0 }));
        }
        Err(error) => return Err(error),
    };
    // Both sides in milliseconds: the predecessor compared seconds with milliseconds here and
    // threw every message away.
    let min_ms = u64::try_from(plan.voicemail.min_length.as_millis()).unwrap_or(u64::MAX);
    if recorded.ms < min_ms {
        story.step("hung up without leaving a message");
        return Ok(InboundOutcome::Missed(MissedReason::TooShort {
            ms: recorded.ms,
        }));
    }
    if !recorded.caller_hung_up {
        // The message ended by silence or length: say goodbye properly.
        let _ = control.hangup("NORMAL_CLEARING").await;
    }
    story.step(format!("voicemail {}", clock_duration(recorded.ms / 1000)));
    Ok(InboundOutcome::Voicemail {
        path: recorded.path,
        ms: recorded.ms,
        reason,
    })
}

/// A call from one of the person's devices to the outside or to another device.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboundPlan {
    pub target: Ring,
    /// Caller ID shown to the other party (name, number).
    pub caller_id: Option<(String, String)>,
    /// How long to let it ring.
    pub ring_for: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboundOutcome {
    Answered,
    Failed { cause: String },
}

/// Places the call the device asked for.
pub async fn outbound(
    control: &dyn CallControl,
    plan: &OutboundPlan,
    story: &mut Story,
) -> Result<OutboundOutcome, ControlError> {
    let mut variables = Vec::new();
    if let Some((name, number)) = &plan.caller_id {
        variables.push(("origination_caller_id_name".to_owned(), name.clone()));
        variables.push(("origination_caller_id_number".to_owned(), number.clone()));
        variables.push(("effective_caller_id_name".to_owned(), name.clone()));
        variables.push(("effective_caller_id_number".to_owned(), number.clone()));
    }
    let request = BridgeRequest {
        endpoints: vec![plan.target.dial.clone()],
        timeout: plan.ring_for,
        variables,
    };
    match control.bridge(&request).await {
        Ok(BridgeOutcome::Answered { .. }) => {
            story.step("answered");
            Ok(OutboundOutcome::Answered)
        }
        Ok(BridgeOutcome::Failed { cause }) => {
            story.step(format!(
                "not answered ({})",
                cause.to_lowercase().replace('_', " ")
            ));
            let _ = control.hangup(&cause).await;
            Ok(OutboundOutcome::Failed { cause })
        }
        Err(error) if error.is_hangup() => {
            story.step("hung up before an answer");
            Ok(OutboundOutcome::Failed {
                cause: "ORIGINATOR_CANCEL".to_owned(),
            })
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use tokio::sync::broadcast;

    use super::*;
    use crate::calls::control::{CallEvent, ControlFuture, DigitsRequest, RecordOutcome};

    /// A call whose answers are scripted; it records what the flow asked for.
    pub(crate) struct ScriptedCall {
        pub actions: Mutex<Vec<String>>,
        bridges: Mutex<VecDeque<Result<BridgeOutcome, ControlError>>>,
        playbacks: Mutex<VecDeque<Result<PlaybackOutcome, ControlError>>>,
        records: Mutex<VecDeque<Result<RecordOutcome, ControlError>>>,
        events: broadcast::Sender<CallEvent>,
    }

    fn hung_up() -> ControlError {
        ControlError::HungUp {
            uuid: "u1".into(),
            cause: "NORMAL_CLEARING".into(),
        }
    }

    impl ScriptedCall {
        pub(crate) fn new() -> ScriptedCall {
            ScriptedCall {
                actions: Mutex::new(Vec::new()),
                bridges: Mutex::new(VecDeque::new()),
                playbacks: Mutex::new(VecDeque::new()),
                records: Mutex::new(VecDeque::new()),
                events: broadcast::channel(8).0,
            }
        }
        fn bridge_gives(self, outcome: Result<BridgeOutcome, ControlError>) -> Self {
            self.bridges.lock().unwrap().push_back(outcome);
            self
        }
        fn playback_gives(self, outcome: Result<PlaybackOutcome, ControlError>) -> Self {
            self.playbacks.lock().unwrap().push_back(outcome);
            self
        }
        fn record_gives(self, ms: u64, caller_hung_up: bool) -> Self {
            self.records.lock().unwrap().push_back(Ok(RecordOutcome {
                ms,
                path: "/recordings/vm.wav".into(),
                stopped_by_silence: !caller_hung_up,
                caller_hung_up,
            }));
            self
        }
        fn did(&self, action: String) {
            self.actions.lock().unwrap().push(action);
        }
        fn actions(&self) -> Vec<String> {
            self.actions.lock().unwrap().clone()
        }
    }

    impl CallControl for ScriptedCall {
        fn uuid(&self) -> &str {
            "u1"
        }
        fn answer(&self) -> ControlFuture<'_, ()> {
            self.did("answer".into());
            Box::pin(async { Ok(()) })
        }
        fn playback<'a>(&'a self, path: &'a str) -> ControlFuture<'a, PlaybackOutcome> {
            self.did(format!("playback {path}"));
            let next = self
                .playbacks
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Ok(PlaybackOutcome::Played));
            Box::pin(async move { next })
        }
        fn record<'a>(&'a self, request: &'a RecordRequest) -> ControlFuture<'a, RecordOutcome> {
            self.did(format!(
                "record {} max {}s",
                request.path,
                request.max.as_secs()
            ));
            let next = self
                .records
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| Err(hung_up()));
            Box::pin(async move { next })
        }
        fn bridge<'a>(&'a self, request: &'a BridgeRequest) -> ControlFuture<'a, BridgeOutcome> {
            self.did(format!(
                "bridge {} for {}s",
                request.endpoints.join(","),
                request.timeout.as_secs()
            ));
            let next = self
                .bridges
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| Err(hung_up()));
            Box::pin(async move { next })
        }
        fn hangup<'a>(&'a self, cause: &'a str) -> ControlFuture<'a, ()> {
            self.did(format!("hangup {cause}"));
            Box::pin(async { Ok(()) })
        }
        fn get_digits<'a>(
            &'a self,
            _request: &'a DigitsRequest,
        ) -> ControlFuture<'a, Option<String>> {
            Box::pin(async { Ok(None) })
        }
        fn set_var<'a>(&'a self, name: &'a str, value: &'a str) -> ControlFuture<'a, ()> {
            self.did(format!("set {name}={value}"));
            Box::pin(async { Ok(()) })
        }
        fn record_session<'a>(&'a self, path: &'a str) -> ControlFuture<'a, ()> {
            self.did(format!("record_session {path}"));
            Box::pin(async { Ok(()) })
        }
        fn stop_record_session<'a>(&'a self, path: &'a str) -> ControlFuture<'a, ()> {
            self.did(format!("stop_record_session {path}"));
            Box::pin(async { Ok(()) })
        }
        fn subscribe(&self) -> broadcast::Receiver<CallEvent> {
            self.events.subscribe()
        }
    }

    fn plan() -> InboundPlan {
        InboundPlan {
            ring: vec![
                Ring {
                    label: "desk".into(),
                    dial: "user/1000@pbx".into(),
                },
                Ring {
                    label: "cell".into(),
                    dial: "sofia/gateway/did1/+15145550100".into(),
                },
            ],
            ring_for: Duration::from_secs(30),
            straight_to_voicemail: None,
            greeting: Some("/greetings/wave_fr.wav".into()),
            recording_path: "/recordings/vm.wav".into(),
            voicemail: VoicemailSettings::default(),
            conversation_path: None,
        }
    }

    async fn run(call: &ScriptedCall, plan: &InboundPlan) -> (InboundOutcome, String) {
        let mut story = Story::begin("Marie called");
        let outcome = inbound(call, plan, &mut story).await.unwrap();
        (outcome, story.line())
    }

    #[tokio::test]
    async fn first_answer_wins() {
        let call = ScriptedCall::new().bridge_gives(Ok(BridgeOutcome::Answered {
            endpoint: Some(1),
            channel: "sofia/gateway/did1/+15145550100".into(),
            other_uuid: None,
        }));
        let (outcome, line) = run(&call, &plan()).await;
        assert_eq!(
            outcome,
            InboundOutcome::Answered {
                by: Some("cell".into()),
                conversation: None,
            }
        );
        assert_eq!(line, "Marie called; rang desk, cell; answered on cell");
        assert_eq!(
            call.actions(),
            vec!["bridge user/1000@pbx,sofia/gateway/did1/+15145550100 for 30s"]
        );
    }

    #[tokio::test]
    async fn a_recorded_call_starts_the_session_recording_before_ringing() {
        let mut plan = plan();
        plan.conversation_path = Some("/recordings/call-u1.wav".into());
        let call = ScriptedCall::new().bridge_gives(Ok(BridgeOutcome::Answered {
            endpoint: Some(0),
            channel: "sofia/internal/1000@10.0.0.2".into(),
            other_uuid: None,
        }));
        let (outcome, line) = run(&call, &plan).await;
        assert_eq!(
            outcome,
            InboundOutcome::Answered {
                by: Some("desk".into()),
                conversation: Some("/recordings/call-u1.wav".into()),
            }
        );
        assert_eq!(
            line,
            "Marie called; rang desk, cell; answered on desk; conversation recorded in /recordings/call-u1.wav"
        );
        assert_eq!(
            call.actions(),
            vec![
                "record_session /recordings/call-u1.wav",
                "bridge user/1000@pbx,sofia/gateway/did1/+15145550100 for 30s",
            ]
        );

        // Nobody answers: the session recording stops before voicemail answers.
        let call = ScriptedCall::new()
            .bridge_gives(Ok(BridgeOutcome::Failed {
                cause: "NO_ANSWER".into(),
            }))
            .record_gives(5_000, true);
        let (outcome, _) = run(&call, &plan).await;
        assert!(matches!(outcome, InboundOutcome::Voicemail { .. }));
        assert_eq!(
            call.actions()[..4],
            [
                "record_session /recordings/call-u1.wav",
                "bridge user/1000@pbx,sofia/gateway/did1/+15145550100 for 30s",
                "stop_record_session /recordings/call-u1.wav",
                "answer",
            ]
        );
    }

    #[tokio::test]
    async fn no_answer_goes_to_voicemail_with_greeting_and_beep() {
        let call = ScriptedCall::new()
            .bridge_gives(Ok(BridgeOutcome::Failed {
                cause: "NO_ANSWER".into(),
            }))
            .record_gives(42_000, false);
        let (outcome, line) = run(&call, &plan()).await;
        assert_eq!(
            outcome,
            InboundOutcome::Voicemail {
                path: "/recordings/vm.wav".into(),
                ms: 42_000,
                reason: None
            }
        );
        assert_eq!(
            line,
            "Marie called; rang desk, cell; no answer after 30 s; voicemail 0:42"
        );
        assert_eq!(
            call.actions(),
            vec![
                "bridge user/1000@pbx,sofia/gateway/did1/+15145550100 for 30s",
                "answer",
                "playback /greetings/wave_fr.wav",
                "playback tone_stream://%(250,0,1000)",
                "record /recordings/vm.wav max 300s",
                "hangup NORMAL_CLEARING",
            ]
        );
    }

    #[tokio::test]
    async fn the_two_second_boundary_is_in_milliseconds() {
        for (ms, kept) in [(1_999, false), (2_000, true), (2_001, true), (0, false)] {
            let call = ScriptedCall::new()
                .bridge_gives(Ok(BridgeOutcome::Failed {
                    cause: "NO_ANSWER".into(),
                }))
                .record_gives(ms, true);
            let (outcome, _) = run(&call, &plan()).await;
            match outcome {
                InboundOutcome::Voicemail { ms: got, .. } => {
                    assert!(kept, "{ms} ms kept");
                    assert_eq!(got, ms);
                }
                InboundOutcome::Missed(MissedReason::TooShort { ms: got }) => {
                    assert!(!kept, "{ms} ms discarded");
                    assert_eq!(got, ms);
                }
                other => panic!("{ms} ms: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn caller_hanging_up_while_ringing_is_a_missed_call() {
        let call = ScriptedCall::new().bridge_gives(Ok(BridgeOutcome::Failed {
            cause: "ORIGINATOR_CANCEL".into(),
        }));
        let (outcome, line) = run(&call, &plan()).await;
        assert_eq!(
            outcome,
            InboundOutcome::Missed(MissedReason::HungUpWhileRinging)
        );
        assert!(line.ends_with("the caller hung up while it rang"), "{line}");
        assert!(!call.actions().contains(&"answer".to_owned()));

        let call = ScriptedCall::new().bridge_gives(Err(hung_up()));
        let (outcome, _) = run(&call, &plan()).await;
        assert_eq!(
            outcome,
            InboundOutcome::Missed(MissedReason::HungUpWhileRinging)
        );
    }

    #[tokio::test]
    async fn declined_and_busy_skip_ringing() {
        for (reason, words) in [
            (StraightToVoicemail::Declined, "declined by your rules"),
            (StraightToVoicemail::Busy, "you were on another call"),
            (
                StraightToVoicemail::NothingToRing,
                "no device was registered",
            ),
        ] {
            let call = ScriptedCall::new().record_gives(5_000, true);
            let mut plan = plan();
            plan.straight_to_voicemail = Some(reason);
            let (outcome, line) = run(&call, &plan).await;
            assert!(
                matches!(outcome, InboundOutcome::Voicemail { reason: Some(r), .. } if r == reason)
            );
            assert_eq!(line, format!("Marie called; {words}; voicemail 0:05"));
            assert!(call
                .actions()
                .iter()
                .all(|action| !action.starts_with("bridge")));
            // The caller hung up to end the message: no second hangup.
            assert!(!call
                .actions()
                .iter()
                .any(|action| action.starts_with("hangup")));
        }
    }

    #[tokio::test]
    async fn hanging_up_during_the_greeting_is_missed_and_a_missing_greeting_still_records() {
        let call = ScriptedCall::new()
            .bridge_gives(Ok(BridgeOutcome::Failed {
                cause: "NO_ANSWER".into(),
            }))
            .playback_gives(Ok(PlaybackOutcome::Interrupted {
                response: "PLAYBACK ERROR".into(),
            }));
        let (outcome, _) = run(&call, &plan()).await;
        assert_eq!(
            outcome,
            InboundOutcome::Missed(MissedReason::HungUpDuringGreeting)
        );
        assert!(!call
            .actions()
            .iter()
            .any(|action| action.starts_with("record")));

        let call = ScriptedCall::new()
            .bridge_gives(Ok(BridgeOutcome::Failed {
                cause: "NO_ANSWER".into(),
            }))
            .playback_gives(Ok(PlaybackOutcome::NotFound))
            .record_gives(3_000, true);
        let (outcome, _) = run(&call, &plan()).await;
        assert!(matches!(
            outcome,
            InboundOutcome::Voicemail { ms: 3_000, .. }
        ));
    }

    #[tokio::test]
    async fn outbound_sets_the_caller_id_and_reports_failures() {
        let call = ScriptedCall::new().bridge_gives(Ok(BridgeOutcome::Failed {
            cause: "USER_BUSY".into(),
        }));
        let plan = OutboundPlan {
            target: Ring {
                label: "+33 1 23 45 67 89".into(),
                dial: "sofia/gateway/fr/+33123456789".into(),
            },
            caller_id: Some(("Jean Untel".into(), "+33987654321".into())),
            ring_for: Duration::from_secs(60),
        };
        let mut story = Story::begin("desk called +33 1 23 45 67 89");
        let outcome = outbound(&call, &plan, &mut story).await.unwrap();
        assert_eq!(
            outcome,
            OutboundOutcome::Failed {
                cause: "USER_BUSY".into()
            }
        );
        assert_eq!(
            story.line(),
            "desk called +33 1 23 45 67 89; not answered (user busy)"
        );
        assert_eq!(
            call.actions(),
            vec![
                "bridge sofia/gateway/fr/+33123456789 for 60s",
                "hangup USER_BUSY"
            ]
        );
    }
}
