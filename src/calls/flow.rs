//! The call flows: what patchbay does with a live call once the rules have decided.
//!
//! A flow gets a [`CallControl`] (the live call, wire-free) and a plan in plain values
//! (which dial strings to ring and for how long, which greeting, why voicemail), runs it, and
//! reports what happened as an outcome for the call record and the journal story. It knows
//! nothing of Rhai or ESL. Invariant: every path ends in exactly one outcome, and a caller who
//! hangs up never leaves a flow waiting.

use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use super::control::{
    BridgeOutcome, BridgeRequest, CallControl, CallEvent, ControlError, PlaybackOutcome,
    RecordRequest, TransferredAway,
};
use super::story::Story;
use crate::journal::{clock_duration, human_duration};
use crate::spool::{DroppedLeg, Transfer, TransferMethod};

/// Something to ring, with the name the person knows it by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    /// "desk", "cell", or the extension.
    pub label: String,
    /// FreeSWITCH dial string: `user/1000@example.com`, `sofia/gateway/did1/+15145550199`.
    pub dial: String,
    /// For a number outside: the caller ID it is shown (digits only), set on its leg alone.
    pub caller_id_number: Option<String>,
}

impl Ring {
    /// The channel variables of this target's leg.
    pub fn leg_variables(&self) -> Vec<(String, String)> {
        self.caller_id_number
            .iter()
            .map(|number| ("origination_caller_id_number".to_owned(), number.clone()))
            .collect()
    }

    /// The dial string with the leg's variables in front, for `conference … dial`, which takes
    /// one endpoint (the values are digits only, so nothing can break out of the braces).
    pub fn dial_with_variables(&self) -> String {
        match &self.caller_id_number {
            Some(number) => format!("{{origination_caller_id_number={number}}}{}", self.dial),
            None => self.dial.clone(),
        }
    }
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
    /// How long to ring the devices again when an answered call drops on the device's side
    /// (`reoffer_seconds`); zero hangs the caller up instead.
    pub reoffer_for: Duration,
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
    /// FreeSWITCH moved the answered call elsewhere (a device's REFER): it goes on in a new
    /// dialplan run, which finishes the record.
    TransferredAway {
        /// The label of the device that had answered, when known.
        by: Option<String>,
        away: TransferredAway,
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

/// The feature code a device presses during a call to pass the caller on: `*1`, the
/// extension or number, then `#`.
pub const TRANSFER_CODE: &str = "*1";

/// The feature code that makes the call a three-way call: `*3`, the extension or number to
/// add, then `#`.
pub const CONFERENCE_CODE: &str = "*3";

/// The sound an answered caller hears while the devices ring again (FreeSWITCH's `ringback`
/// plays it on an answered channel; a US ring, as `${us-ring}` in FreeSWITCH's vars.xml).
pub const RINGBACK: &str = "%(2000,4000,440,480)";

/// What the flows need from the rest of patchbay during a call, behind a trait so that
/// flows stay wire-free: digits pressed on a device's leg and what a transfer target means.
pub trait Features: Send + Sync {
    /// Digits pressed on leg `uuid` (a bridged device's) from now on; the stream ends when
    /// the leg does.
    fn leg_digits(&self, uuid: &str) -> mpsc::UnboundedReceiver<char>;
    /// What to ring for a transfer target pressed on a device (extension or number), or
    /// `None` when it names nothing that can be rung.
    fn transfer_target(&self, target: &str) -> Option<Ring>;
}

/// No mid-call features: digits are never seen and nothing is a transfer target.
pub struct NoFeatures;

impl Features for NoFeatures {
    fn leg_digits(&self, _uuid: &str) -> mpsc::UnboundedReceiver<char> {
        mpsc::unbounded_channel().1
    }
    fn transfer_target(&self, _target: &str) -> Option<Ring> {
        None
    }
}

/// What happened to the people on the call besides ringing and answering: transfers and
/// dropped device legs, for the call record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Handovers {
    pub transfers: Vec<Transfer>,
    pub drops: Vec<DroppedLeg>,
    /// Who joined the caller in a three-way call (the device first).
    pub conference: Vec<String>,
}

/// Whether a device leg's hangup cause means its network or media failed (the person did
/// not hang up): the caller is still there and worth ringing the devices again for.
pub fn is_network_drop(cause: &str) -> bool {
    matches!(
        cause,
        "MEDIA_TIMEOUT"
            | "NORMAL_TEMPORARY_FAILURE"
            | "RECOVERY_ON_TIMER_EXPIRE"
            | "NETWORK_OUT_OF_ORDER"
            | "DESTINATION_OUT_OF_ORDER"
    )
}

/// A feature code typed on a device, with its number.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Feature {
    Transfer(String),
    Conference(String),
}

/// Follows the digits pressed on a device for a feature code (`*1<number>#`, `*3<number>#`).
#[derive(Debug, Default)]
struct FeatureCode {
    typed: String,
}

impl FeatureCode {
    /// Adds one digit; returns the feature once a whole code has been typed.
    fn push(&mut self, digit: char) -> Option<Feature> {
        if digit == '*' {
            self.typed = "*".to_owned();
            return None;
        }
        if self.typed.is_empty() {
            return None;
        }
        if digit == '#' {
            let typed = std::mem::take(&mut self.typed);
            let number = |code: &str| {
                typed
                    .strip_prefix(code)
                    .filter(|number| !number.is_empty())
                    .map(str::to_owned)
            };
            return number(TRANSFER_CODE)
                .map(Feature::Transfer)
                .or_else(|| number(CONFERENCE_CODE).map(Feature::Conference));
        }
        self.typed.push(digit);
        let known = [TRANSFER_CODE, CONFERENCE_CODE]
            .iter()
            .any(|code| self.typed.starts_with(code));
        // Not one of our codes, or far longer than any number: start over.
        if !known && self.typed.len() >= TRANSFER_CODE.len() || self.typed.len() > 24 {
            self.typed.clear();
        }
        None
    }
}

/// How one round of ringing went.
enum Rang {
    /// Nobody answered: FreeSWITCH's cause (NO_ANSWER, ORIGINATOR_CANCEL, ...).
    NotAnswered(String),
    /// Someone answered (their label when known); the bridge is over.
    Answered { by: Option<String>, end: TalkEnd },
}

/// How an answered bridge ended.
enum TalkEnd {
    /// Someone hung up.
    HungUp,
    /// The device's leg dropped (media timeout, network failure) with the caller still on.
    Dropped { cause: String },
    /// The device pressed the transfer code for this target; its leg has been hung up.
    FeatureTransfer(Ring),
    /// FreeSWITCH moved the caller elsewhere (the device sent a REFER).
    TransferredAway(TransferredAway),
    /// The device pressed the conference code: its leg is in conference `room` (a name, on
    /// the `default` profile), `target` is to be added.
    Conference { room: String, target: Ring },
}

fn cause_words(cause: &str) -> String {
    cause.to_lowercase().replace('_', " ")
}

fn answered_step(words: &str, by: &Option<String>) -> String {
    match by {
        Some(label) => format!("{words} on {label}"),
        None => words.to_owned(),
    }
}

fn labels(rings: &[Ring]) -> String {
    let labels: Vec<&str> = rings.iter().map(|ring| ring.label.as_str()).collect();
    labels.join(", ")
}

async fn next_digit(digits: &mut Option<mpsc::UnboundedReceiver<char>>) -> Option<char> {
    match digits {
        Some(digits) => digits.recv().await,
        None => std::future::pending().await,
    }
}

/// Rings `rings` at once for `ring_for`; while someone talks, follows their digits for the
/// transfer code.
async fn ring(
    control: &dyn CallControl,
    features: &dyn Features,
    rings: &[Ring],
    ring_for: Duration,
) -> Result<Rang, ControlError> {
    let request = BridgeRequest {
        endpoints: rings.iter().map(|ring| ring.dial.clone()).collect(),
        leg_variables: rings.iter().map(Ring::leg_variables).collect(),
        timeout: ring_for,
        // originate_timeout bounds the whole attempt (the legs carry leg_timeout).
        variables: vec![(
            "originate_timeout".to_owned(),
            ring_for.as_secs().max(1).to_string(),
        )],
    };
    let mut events = control.subscribe();
    let mut events_open = true;
    let bridge = control.bridge(&request);
    tokio::pin!(bridge);
    let mut digits = None;
    let mut device_leg: Option<String> = None;
    let mut code = FeatureCode::default();
    let mut transfer: Option<Ring> = None;
    let mut conference: Option<(String, Ring)> = None;
    let outcome = loop {
        tokio::select! {
            outcome = &mut bridge => break outcome?,
            event = events.recv(), if events_open => match event {
                Ok(CallEvent::Bridged { other_uuid: Some(uuid) }) => {
                    digits = Some(features.leg_digits(&uuid));
                    device_leg = Some(uuid);
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => events_open = false,
            },
            digit = next_digit(&mut digits) => {
                let Some(digit) = digit else {
                    digits = None;
                    continue;
                };
                let Some(feature) = code.push(digit) else { continue };
                if transfer.is_some() || conference.is_some() {
                    continue;
                }
                let (Feature::Transfer(number) | Feature::Conference(number)) = &feature;
                let (Some(target), Some(leg)) = (features.transfer_target(number), &device_leg)
                else {
                    tracing::info!("feature code for {number:?}: nothing to ring there");
                    continue;
                };
                let done = match &feature {
                    // A blind transfer: the device leaves, which ends the bridge with the
                    // caller still on the line, and the caller is bridged on to the target.
                    Feature::Transfer(_) => control
                        .kill_leg(leg, "NORMAL_CLEARING")
                        .await
                        .map(|()| transfer = Some(target)),
                    // A three-way call: the device's leg goes into a room of its own (the
                    // bridge ends), the caller and the target join it next.
                    Feature::Conference(_) => {
                        let room = format!("patchbay-{}", control.uuid());
                        control
                            .move_leg_to_conference(leg, &format!("{room}@default"))
                            .await
                            .map(|()| conference = Some((room, target)))
                    }
                };
                match done {
                    Ok(()) => {}
                    Err(error) if error.is_hangup() => return Err(error),
                    Err(error) => tracing::warn!("feature code {feature:?}: {error}"),
                }
            }
        }
    };
    Ok(match outcome {
        BridgeOutcome::Failed { cause } => Rang::NotAnswered(cause),
        BridgeOutcome::Answered {
            endpoint,
            channel,
            ended_by,
            transferred,
            ..
        } => {
            let by = endpoint
                .and_then(|index| rings.get(index))
                .or_else(|| rings.iter().find(|ring| answered_by(ring, &channel)))
                .map(|ring| ring.label.clone());
            let end = match (transferred, transfer, conference, ended_by) {
                (Some(away), ..) => TalkEnd::TransferredAway(away),
                (None, Some(target), ..) => TalkEnd::FeatureTransfer(target),
                (None, None, Some((room, target)), _) => TalkEnd::Conference { room, target },
                (None, None, None, Some(cause)) if is_network_drop(&cause) => {
                    TalkEnd::Dropped { cause }
                }
                _ => TalkEnd::HungUp,
            };
            Rang::Answered { by, end }
        }
    })
}

/// Runs an inbound call: ring, then voicemail; adds its steps to `story` and its transfers
/// and drops to `handovers`.
pub async fn inbound(
    control: &dyn CallControl,
    plan: &InboundPlan,
    features: &dyn Features,
    story: &mut Story,
    handovers: &mut Handovers,
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
            story.step(format!("rang {}", labels(&plan.ring)));
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
            match ring(control, features, &plan.ring, plan.ring_for).await {
                Ok(Rang::Answered { by, end }) => {
                    story.step(answered_step("answered", &by));
                    if let Some(path) = &recording {
                        story.step(format!("conversation recorded in {path}"));
                    }
                    let outcome = talked(control, plan, features, story, handovers, by, end).await;
                    return outcome.map(|outcome| match outcome {
                        InboundOutcome::Answered { by, .. } => InboundOutcome::Answered {
                            by,
                            conversation: recording,
                        },
                        other => other,
                    });
                }
                Ok(Rang::NotAnswered(cause)) if cause == "ORIGINATOR_CANCEL" => {
                    story.step("the caller hung up while it rang");
                    return Ok(InboundOutcome::Missed(MissedReason::HungUpWhileRinging));
                }
                Ok(Rang::NotAnswered(cause)) => {
                    story.step(no_answer_step(&cause, plan.ring_for));
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

/// The caller joins the room the device's leg went to and the target is rung into it; the
/// call lasts while the room has two people in it (`mintwo` on the caller).
async fn three_way(
    control: &dyn CallControl,
    story: &mut Story,
    handovers: &mut Handovers,
    by: Option<String>,
    room: &str,
    target: &Ring,
) -> Result<InboundOutcome, ControlError> {
    let who = by.clone().unwrap_or_else(|| "the device".to_owned());
    let began = tokio::time::Instant::now();
    let caller_room = format!("{room}@default+flags{{mintwo}}");
    let target_dial = target.dial_with_variables();
    let (stayed, dialled) = tokio::join!(
        control.conference(&caller_room),
        control.dial_into_conference(room, &target_dial)
    );
    let joined = matches!(dialled, Ok(true));
    handovers.conference = vec![who.clone()];
    if joined {
        handovers.conference.push(target.label.clone());
        story.step(format!(
            "{who} made it a three-way call: the caller, {who} and {} were connected",
            target.label
        ));
    } else {
        story.step(format!(
            "{who} tried to add {} to the call, who did not answer",
            target.label
        ));
    }
    if let Err(error) = stayed {
        if !error.is_hangup() {
            return Err(error);
        }
    }
    story.step(format!(
        "the {} call ended after {}",
        if joined { "three-way" } else { "conference" },
        clock_duration(began.elapsed().as_secs())
    ));
    let _ = control.hangup("NORMAL_CLEARING").await;
    Ok(InboundOutcome::Answered {
        by,
        conversation: None,
    })
}

fn no_answer_step(cause: &str, ring_for: Duration) -> String {
    if cause == "NO_ANSWER" || cause == "ALLOTTED_TIMEOUT" {
        format!("no answer after {}", human_duration(ring_for))
    } else {
        format!("no answer ({})", cause_words(cause))
    }
}

/// After an answer: the call ends, or is re-offered when the device dropped, or goes on to
/// a transfer target, until someone hangs up or nobody answers (then voicemail).
async fn talked(
    control: &dyn CallControl,
    plan: &InboundPlan,
    features: &dyn Features,
    story: &mut Story,
    handovers: &mut Handovers,
    mut by: Option<String>,
    mut end: TalkEnd,
) -> Result<InboundOutcome, ControlError> {
    loop {
        let who = by.clone().unwrap_or_else(|| "the device".to_owned());
        let (rings, ring_for, again) = match end {
            TalkEnd::HungUp => {
                let _ = control.hangup("NORMAL_CLEARING").await;
                return Ok(InboundOutcome::Answered {
                    by,
                    conversation: None,
                });
            }
            TalkEnd::TransferredAway(away) => {
                return Ok(InboundOutcome::TransferredAway { by, away });
            }
            TalkEnd::Dropped { cause } => {
                handovers.drops.push(DroppedLeg {
                    device: who.clone(),
                    cause: cause.clone(),
                });
                if plan.reoffer_for.is_zero() {
                    story.step(format!(
                        "the call dropped on {who} ({})",
                        cause_words(&cause)
                    ));
                    let _ = control.hangup("NORMAL_CLEARING").await;
                    return Ok(InboundOutcome::Answered {
                        by,
                        conversation: None,
                    });
                }
                story.step(format!(
                    "the call dropped on {who} ({}); rang {} again",
                    cause_words(&cause),
                    labels(&plan.ring)
                ));
                // The caller hears ringing, not silence, while the devices ring again.
                if let Err(error) = control.set_var("ringback", RINGBACK).await {
                    if error.is_hangup() {
                        story.step("the caller hung up");
                        return Ok(InboundOutcome::Answered {
                            by,
                            conversation: None,
                        });
                    }
                }
                (plan.ring.clone(), plan.reoffer_for, true)
            }
            TalkEnd::Conference { room, target } => {
                return three_way(control, story, handovers, by, &room, &target).await;
            }
            TalkEnd::FeatureTransfer(target) => {
                handovers.transfers.push(Transfer {
                    from: who.clone(),
                    to: target.label.clone(),
                    method: TransferMethod::FeatureCode,
                });
                story.step(format!("{who} transferred the call to {}", target.label));
                (vec![target], plan.ring_for, false)
            }
        };
        match ring(control, features, &rings, ring_for).await {
            Ok(Rang::Answered {
                by: next,
                end: next_end,
            }) => {
                story.step(answered_step(
                    if again { "answered again" } else { "answered" },
                    &next,
                ));
                by = next;
                end = next_end;
            }
            Ok(Rang::NotAnswered(cause)) if cause != "ORIGINATOR_CANCEL" => {
                story.step(if again {
                    format!("nobody picked up again within {}", human_duration(ring_for))
                } else {
                    no_answer_step(&cause, ring_for)
                });
                return voicemail(control, plan, None, story).await;
            }
            Ok(Rang::NotAnswered(_)) => {
                story.step("the caller hung up while it rang");
                return Ok(InboundOutcome::Answered {
                    by,
                    conversation: None,
                });
            }
            Err(error) if error.is_hangup() => {
                story.step("the caller hung up while it rang");
                return Ok(InboundOutcome::Answered {
                    by,
                    conversation: None,
                });
            }
            Err(error) => return Err(error),
        }
    }
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
        leg_variables: vec![plan.target.leg_variables()],
        timeout: plan.ring_for,
        variables,
    };
    match control.bridge(&request).await {
        Ok(BridgeOutcome::Answered { .. }) => {
            story.step("answered");
            // FreeSWITCH keeps the device's channel after the bridge (hangup_after_bridge is
            // off so inbound calls can ring again): end it.
            let _ = control.hangup("NORMAL_CLEARING").await;
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
    use crate::calls::control::{ControlFuture, DigitsRequest, RecordOutcome};

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
        fn kill_leg<'a>(&'a self, uuid: &'a str, cause: &'a str) -> ControlFuture<'a, ()> {
            self.did(format!("kill {uuid} {cause}"));
            Box::pin(async { Ok(()) })
        }
        fn move_leg_to_conference<'a>(
            &'a self,
            uuid: &'a str,
            room: &'a str,
        ) -> ControlFuture<'a, ()> {
            self.did(format!("move {uuid} to {room}"));
            Box::pin(async { Ok(()) })
        }
        fn conference<'a>(&'a self, room: &'a str) -> ControlFuture<'a, ()> {
            self.did(format!("conference {room}"));
            Box::pin(async { Ok(()) })
        }
        fn dial_into_conference<'a>(
            &'a self,
            room: &'a str,
            dial: &'a str,
        ) -> ControlFuture<'a, bool> {
            self.did(format!("dial {dial} into {room}"));
            Box::pin(async { Ok(true) })
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
                    caller_id_number: None,
                },
                Ring {
                    label: "cell".into(),
                    dial: "sofia/gateway/did1/+15145550100".into(),
                    caller_id_number: None,
                },
            ],
            ring_for: Duration::from_secs(30),
            reoffer_for: Duration::from_secs(30),
            straight_to_voicemail: None,
            greeting: Some("/greetings/wave_fr.wav".into()),
            recording_path: "/recordings/vm.wav".into(),
            voicemail: VoicemailSettings::default(),
            conversation_path: None,
        }
    }

    async fn run(call: &ScriptedCall, plan: &InboundPlan) -> (InboundOutcome, String) {
        let mut story = Story::begin("Marie called");
        let mut handovers = Handovers::default();
        let outcome = inbound(call, plan, &NoFeatures, &mut story, &mut handovers)
            .await
            .unwrap();
        (outcome, story.line())
    }

    #[test]
    fn the_transfer_code_is_star_one_number_hash() {
        let typed = |keys: &str| {
            let mut code = FeatureCode::default();
            keys.chars()
                .filter_map(|key| code.push(key))
                .collect::<Vec<_>>()
        };
        let transfer = |number: &str| Feature::Transfer(number.to_owned());
        assert_eq!(typed("*11001#"), [transfer("1001")]);
        assert_eq!(typed("12*1+33612345678#"), [transfer("+33612345678")]);
        assert_eq!(typed("*31001#"), [Feature::Conference("1001".to_owned())]);
        // Another star code, an empty number, digits without a star: nothing.
        assert!(typed("*21001#").is_empty());
        assert!(typed("*1#").is_empty());
        assert!(typed("11001#").is_empty());
        // A star starts over.
        assert_eq!(typed("*1*11002#"), [transfer("1002")]);
    }

    #[test]
    fn network_causes_are_drops_and_hang_ups_are_not() {
        for cause in [
            "MEDIA_TIMEOUT",
            "NORMAL_TEMPORARY_FAILURE",
            "RECOVERY_ON_TIMER_EXPIRE",
        ] {
            assert!(is_network_drop(cause), "{cause}");
        }
        for cause in ["NORMAL_CLEARING", "USER_BUSY", "ORIGINATOR_CANCEL"] {
            assert!(!is_network_drop(cause), "{cause}");
        }
    }

    #[tokio::test]
    async fn first_answer_wins() {
        let call = ScriptedCall::new().bridge_gives(Ok(BridgeOutcome::Answered {
            endpoint: Some(1),
            channel: "sofia/gateway/did1/+15145550100".into(),
            other_uuid: None,
            ended_by: Some("NORMAL_CLEARING".into()),
            transferred: None,
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
            vec![
                "bridge user/1000@pbx,sofia/gateway/did1/+15145550100 for 30s",
                "hangup NORMAL_CLEARING"
            ]
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
            ended_by: Some("NORMAL_CLEARING".into()),
            transferred: None,
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
                "hangup NORMAL_CLEARING",
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
                caller_id_number: None,
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
