//! One call from the moment FreeSWITCH hands it over to its final record: build the
//! [`Call`] (numbers in E.164, contact, country, local time, registered devices, busy), ask
//! the rules, turn their decision into a plan, run the flow, then hand the finished-call
//! record to the spool and write the call's journal line.
//!
//! Everything arrives as plain values: [`Incoming`] from the outbound socket, a
//! [`CallControl`] for the live call, the snapshot of the phone repo that was live when the
//! call arrived (the call keeps it to the end, whatever is committed meanwhile). Invariant:
//! every call yields exactly one [`CallRecord`], whatever happens on the way.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};

use super::control::{CallControl, CallEvent, DigitsRequest, PlaybackOutcome, RecordRequest};
use super::flow::{
    self, Features, Handovers, InboundOutcome, InboundPlan, OutboundOutcome, OutboundPlan, Ring,
    StraightToVoicemail, VoicemailSettings,
};
use super::mailbox::{DoNotDisturb, Mailbox};
use super::registry::Registry;
use super::story::{which_number, who, Story};
use super::{Call, Origin};
use crate::contacts::number::{normalize, Number};
use crate::journal::Journal;
use crate::repo::Snapshot;
use crate::rules::{BridgeTo, CallScript, Decision, RecordOptions, ScriptError, SharedResources};
use crate::settings::{Did, Settings};
use crate::spool::{CallRecord, Outcome, Spool, Transfer, TransferMethod};

/// Where "now" comes from; injected so tests control time.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What every call needs, shared by all of them.
pub struct Context {
    pub settings: Arc<Settings>,
    /// The live snapshot of the phone repo; each call loads it once.
    pub snapshots: Arc<ArcSwap<Snapshot>>,
    pub registry: Arc<Registry>,
    pub journal: Journal,
    /// Where finished calls go; `None` drops them after the journal line (tests, simulate).
    pub spool: Option<Spool>,
    pub voicemail: VoicemailSettings,
    pub clock: Clock,
    /// Voicemails kept for the `*86` menu, and which were heard.
    pub mailbox: Arc<Mailbox>,
    /// The do-not-disturb switch (`*86`, 3), read by every call.
    pub do_not_disturb: Arc<DoNotDisturb>,
    /// Calls FreeSWITCH transferred away mid-call, waiting for their new socket session.
    pub handoffs: Handoffs,
}

/// An answered call that FreeSWITCH moved to a new dialplan run (a device's REFER): what
/// its first session knew, for the session that continues it.
pub struct Handoff {
    story: Story,
    record: CallRecord,
    call: Call,
    decision: Decision,
    snapshot: Arc<Snapshot>,
    plan: InboundPlan,
    /// The label of the device that transferred.
    by: String,
}

/// Transferred calls between their old and new sessions, by the caller's channel uuid.
#[derive(Default)]
pub struct Handoffs {
    waiting: Mutex<std::collections::HashMap<String, Handoff>>,
    arrived: tokio::sync::Notify,
}

/// Leaves an answered call that FreeSWITCH transferred away to the session that continues
/// it; returns the record as it stood, for this session's caller.
fn hand_off(context: &Context, handoff: Handoff) -> CallRecord {
    context.registry.call_ended(&handoff.call.uuid);
    let kept = handoff.record.clone();
    let uuid = handoff.call.uuid.clone();
    context.handoffs.put(&uuid, handoff);
    kept
}

impl Handoffs {
    fn put(&self, uuid: &str, handoff: Handoff) {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(uuid.to_owned(), handoff);
        self.arrived.notify_waiters();
    }

    /// The handoff for `uuid`, waiting a while: the new session's socket may connect before
    /// the old session has seen its bridge end.
    async fn take(&self, uuid: &str, patience: Duration) -> Option<Handoff> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(handoff) = self
                .waiting
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(uuid)
            {
                return Some(handoff);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return None;
            }
        }
    }
}

/// The call as FreeSWITCH handed it over (decoded, untrusted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    pub uuid: String,
    pub caller_id_name: String,
    pub caller_id_number: String,
    pub destination_number: String,
    /// Dialplan context: "public" for calls through a DID, "default" for the devices.
    pub context: String,
    /// Set when FreeSWITCH transferred this channel here (`transfer_source`): the call
    /// started earlier, on another socket session.
    pub transfer_source: Option<String>,
}

/// Runs one call to its end and returns its record (already handed to the spool).
pub async fn handle(
    control: Arc<dyn CallControl>,
    incoming: Incoming,
    context: Arc<Context>,
) -> CallRecord {
    if incoming.transfer_source.is_some() {
        let handoff = context
            .handoffs
            .take(&incoming.uuid, Duration::from_secs(10))
            .await;
        if let Some(handoff) = handoff {
            return transferred(control, incoming, handoff, context).await;
        }
        tracing::warn!(
            "call {}: transferred here, but its earlier part is unknown; handling it as new",
            incoming.uuid
        );
    }
    let started = (context.clock)();
    let answered_at = watch_answer(control.as_ref(), &context.clock);
    let snapshot = context.snapshots.load_full();
    let origin = if incoming.context == "default" {
        Origin::Internal
    } else {
        Origin::External
    };
    let call = build_call(&incoming, origin, &snapshot, &context, started);
    context.registry.call_started(
        &call.uuid,
        origin,
        &who(call.peer_name(), &call.peer_number),
        started,
    );
    let resources: SharedResources = snapshot.clone();
    let decision = snapshot.rules().decide(&call, &resources);
    for error in &decision.errors {
        context
            .journal
            .write(format!("rule problem during a call: {error}"));
    }

    let mut record = CallRecord {
        uuid: call.uuid.clone(),
        origin,
        peer_number: call.peer_number.clone(),
        // On a device's own call the caller ID name is the device's, not the other party's.
        caller_id_name: match origin {
            Origin::External => call.caller_id_name.clone(),
            Origin::Internal => String::new(),
        },
        contact: call.contact.clone(),
        did: call.did.clone(),
        language: decision
            .language()
            .map(str::to_owned)
            .or_else(|| language_of(&call)),
        started,
        answered: None,
        ended: started,
        outcome: Outcome::Missed,
        devices_rung: Vec::new(),
        rules_matched: decision.matched.iter().map(|id| id.to_string()).collect(),
        deciding_rule: decision.matched.last().map(|id| id.to_string()),
        hangup_cause: None,
        transfers: Vec::new(),
        drops: Vec::new(),
        conference: Vec::new(),
        conversation: None,
    };

    let story = match origin {
        Origin::External => {
            let (story, away) = inbound(
                control.as_ref(),
                &call,
                &decision,
                &snapshot,
                &context,
                &mut record,
            )
            .await;
            if let Some((plan, by)) = away {
                // The call goes on in the session FreeSWITCH opens for the transfer, which
                // writes the journal line and the record.
                record.answered = *answered_at
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                return hand_off(
                    &context,
                    Handoff {
                        story,
                        record,
                        call,
                        decision,
                        snapshot,
                        plan,
                        by,
                    },
                );
            }
            story
        }
        Origin::Internal if decision.has_dialplan() => {
            let device = device_label(&snapshot, &context.settings, &incoming.caller_id_number);
            let mut story = Story::begin(format!("{device} opened {}", call.destination_number));
            run_dialplan(
                Arc::clone(&control),
                &call,
                &decision,
                &snapshot,
                &resources,
                &context,
                device,
                &mut story,
            )
            .await;
            record.outcome = Outcome::Outgoing {
                from_device: incoming.caller_id_number.clone(),
                answered: true,
                talk_secs: 0,
            };
            story
        }
        Origin::Internal => {
            outbound(
                control.as_ref(),
                &incoming,
                &call,
                &decision,
                &snapshot,
                &context,
                &mut record,
            )
            .await
        }
    };

    record.answered = *answered_at
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    finish(call, record, story, snapshot, resources, context).await
}

/// The end of every call: talk time, the journal line, the rules' handlers, the spool.
async fn finish(
    call: Call,
    mut record: CallRecord,
    story: Story,
    snapshot: Arc<Snapshot>,
    resources: SharedResources,
    context: Arc<Context>,
) -> CallRecord {
    record.ended = (context.clock)();
    let talk_secs = record
        .answered
        .map(|answered| {
            (record.ended - answered)
                .num_seconds()
                .max(0)
                .unsigned_abs()
        })
        .unwrap_or(0);
    match &mut record.outcome {
        Outcome::Answered {
            talk_secs: talk, ..
        }
        | Outcome::Outgoing {
            talk_secs: talk, ..
        } => *talk = talk_secs,
        _ => {}
    }
    context.registry.call_ended(&call.uuid);
    context.journal.write(story.line());
    run_event_handlers(&snapshot, &resources, &call, &record, &context.journal);
    let recording = match &record.outcome {
        Outcome::Voicemail { recording, .. } => Some(recording.clone()),
        _ => None,
    };
    if let Some(recording) = &recording {
        // Before the spool moves it away: the `*86` menu plays it from the mailbox.
        if let Err(error) = context
            .mailbox
            .keep(recording, &record.uuid, record.started)
        {
            context.journal.write(format!(
                "the voicemail from {} could not be kept for listening from the phone: {error}",
                record.peer_label()
            ));
        }
    }
    if let Some(spool) = &context.spool {
        if let Err(error) = spool.submit(record.clone(), recording.as_deref()).await {
            context.journal.write(format!(
                "could not queue the call with {} for email and calendar: {error}",
                record.peer_label()
            ));
        }
    }
    record
}

/// Continues a call FreeSWITCH transferred to this session (a device's REFER): ring the
/// target in its place, then voicemail, and finish the call's one record.
async fn transferred(
    control: Arc<dyn CallControl>,
    incoming: Incoming,
    handoff: Handoff,
    context: Arc<Context>,
) -> CallRecord {
    let answered_at = watch_answer(control.as_ref(), &context.clock);
    let Handoff {
        mut story,
        mut record,
        call,
        decision,
        snapshot,
        plan,
        by,
    } = handoff;
    context.registry.call_started(
        &call.uuid,
        Origin::External,
        &who(call.peer_name(), &call.peer_number),
        record.started,
    );
    let destination = &incoming.destination_number;
    let target = {
        let features = CallFeatures {
            decision: &decision,
            snapshot: &snapshot,
            context: &context,
            call: &call,
        };
        features.transfer_target(destination)
    };
    let label = target
        .as_ref()
        .map_or_else(|| destination.clone(), |ring| ring.label.clone());
    story.step(format!("{by} transferred the call to {label}"));
    record.transfers.push(Transfer {
        from: by,
        to: label.clone(),
        method: TransferMethod::Refer,
    });
    if !record.devices_rung.contains(&label) {
        record.devices_rung.push(label);
    }
    let plan = InboundPlan {
        ring: target.into_iter().collect(),
        straight_to_voicemail: None,
        ..plan
    };
    let away = run_inbound_plan(
        control.as_ref(),
        &plan,
        &call,
        &decision,
        &snapshot,
        &context,
        &mut record,
        &mut story,
    )
    .await;
    if record.answered.is_none() {
        record.answered = *answered_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
    }
    if let Some(by) = away {
        // Transferred on again: the next session finishes the call.
        return hand_off(
            &context,
            Handoff {
                story,
                record,
                call,
                decision,
                snapshot,
                plan,
                by,
            },
        );
    }
    let resources: SharedResources = snapshot.clone();
    finish(call, record, story, snapshot, resources, context).await
}

/// Notes when the call is first bridged or answered by a device (talk time starts there).
fn watch_answer(control: &dyn CallControl, clock: &Clock) -> Arc<Mutex<Option<DateTime<Utc>>>> {
    let answered = Arc::new(Mutex::new(None));
    let mut events = control.subscribe();
    let slot = Arc::clone(&answered);
    let clock = Arc::clone(clock);
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match event {
                CallEvent::Bridged { .. } => {
                    let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    slot.get_or_insert_with(|| clock());
                }
                CallEvent::Finished { .. } => break,
                _ => {}
            }
        }
    });
    answered
}

fn language_of(call: &Call) -> Option<String> {
    crate::rules::language_for(call.country.as_deref(), call.location.as_deref()).map(str::to_owned)
}

fn build_call(
    incoming: &Incoming,
    origin: Origin,
    snapshot: &Snapshot,
    context: &Context,
    now: DateTime<Utc>,
) -> Call {
    let region = context.settings.default_region;
    let (peer_raw, did) = match origin {
        Origin::External => (
            &incoming.caller_id_number,
            find_did(&context.settings, &incoming.destination_number)
                .map(|did| did_number(did, region)),
        ),
        Origin::Internal => (&incoming.destination_number, None),
    };
    let peer: Option<Number> = normalize(peer_raw, region);
    let peer_number = peer
        .as_ref()
        .map(|number| number.e164.clone())
        .unwrap_or_else(|| peer_raw.clone());
    let contact = peer
        .as_ref()
        .and_then(|number| snapshot.contacts().contact(&number.e164));
    Call {
        uuid: incoming.uuid.clone(),
        origin,
        peer_number,
        caller_id_name: incoming.caller_id_name.clone(),
        caller_id_number: incoming.caller_id_number.clone(),
        destination_number: incoming.destination_number.clone(),
        did,
        country: peer.as_ref().and_then(|number| number.country.clone()),
        location: peer.as_ref().and_then(|number| number.location.clone()),
        contact,
        local_time: now.with_timezone(&context.settings.timezone).naive_local(),
        device_count: context.registry.device_count(),
        busy: context.registry.busy(&incoming.uuid),
        do_not_disturb: context.do_not_disturb.is_on(),
        state: "ringing".to_owned(),
        hangup_cause: None,
    }
}

/// The DID a call came in on: the one whose number is the destination (any written form).
fn find_did<'a>(settings: &'a Settings, destination: &str) -> Option<&'a Did> {
    let region = settings.default_region;
    let wanted = normalize(destination, region).map(|number| number.e164);
    settings.dids.iter().find(|did| {
        did.pstn_number == destination
            || did.gateway_name == destination
            || (wanted.is_some()
                && normalize(&did.pstn_number, region).map(|number| number.e164) == wanted)
    })
}

fn did_number(did: &Did, region: crate::contacts::number::Region) -> String {
    normalize(&did.pstn_number, region)
        .map(|number| number.e164)
        .unwrap_or_else(|| did.pstn_number.clone())
}

fn did_country(
    did: &Did,
    snapshot: &Snapshot,
    region: crate::contacts::number::Region,
) -> Option<String> {
    did.country.clone().or_else(|| {
        let number = normalize(&did.pstn_number, region)?;
        snapshot
            .phone()
            .dids
            .get(&number.e164)
            .and_then(|config| config.country.clone())
            .or(number.country)
    })
}

/// "desk" for a device the person named, else "extension 1000".
fn device_label(snapshot: &Snapshot, settings: &Settings, extension: &str) -> String {
    if let Some(name) = snapshot
        .phone()
        .devices
        .get(extension)
        .and_then(|device| device.name.clone())
    {
        return name;
    }
    settings
        .devices()
        .into_iter()
        .find(|device| device.extension.to_string() == extension)
        .map(|device| device.name)
        .filter(|name| !name.starts_with("Device "))
        .unwrap_or_else(|| format!("extension {extension}"))
}

fn sip_domain(settings: &Settings) -> String {
    settings
        .freeswitch
        .sip_domain
        .clone()
        .unwrap_or_else(|| "${domain_name}".to_owned())
}

fn is_extension(settings: &Settings, text: &str) -> bool {
    settings
        .devices()
        .iter()
        .any(|device| device.extension.to_string() == text)
}

/// The gateway for calling `number` out: the decision's, else an up DID of the number's
/// country, else the first up DID, else the first configured.
fn choose_did<'a>(
    settings: &'a Settings,
    snapshot: &Snapshot,
    registry: &Registry,
    decision: &Decision,
    country: Option<&str>,
) -> Option<&'a Did> {
    if let Some(wanted) = decision.did() {
        if let Some(did) = find_did(settings, wanted) {
            return Some(did);
        }
    }
    let up = registry.gateways_up();
    let is_up = |did: &&Did| up.iter().any(|name| name == &did.gateway_name);
    let region = settings.default_region;
    settings
        .dids
        .iter()
        .filter(is_up)
        .find(|did| country.is_some() && did_country(did, snapshot, region).as_deref() == country)
        .or_else(|| settings.dids.iter().find(is_up))
        .or_else(|| settings.dids.first())
}

/// What to ring: the decision's targets (device names, extensions, numbers) or every
/// registered device.
fn rings(decision: &Decision, snapshot: &Snapshot, context: &Context, call: &Call) -> Vec<Ring> {
    let settings = &context.settings;
    let domain = sip_domain(settings);
    let device = |extension: &str| Ring {
        label: device_label(snapshot, settings, extension),
        dial: format!("user/{extension}@{domain}"),
        caller_id_number: None,
    };
    match decision.bridge_to() {
        BridgeTo::AllDevices => context
            .registry
            .registered_devices()
            .iter()
            .map(|extension| device(extension))
            .collect(),
        BridgeTo::Targets(targets) => targets
            .iter()
            .filter_map(|target| ring_target(target, decision, snapshot, context, call))
            .collect(),
    }
}

/// What to ring for one target: a device's extension or name, else a number through a DID.
fn ring_target(
    target: &str,
    decision: &Decision,
    snapshot: &Snapshot,
    context: &Context,
    call: &Call,
) -> Option<Ring> {
    let settings = &context.settings;
    let domain = sip_domain(settings);
    let device = |extension: &str| Ring {
        label: device_label(snapshot, settings, extension),
        dial: format!("user/{extension}@{domain}"),
        caller_id_number: None,
    };
    if is_extension(settings, target) {
        return Some(device(target));
    }
    let named = snapshot
        .phone()
        .devices
        .iter()
        .find(|(_, config)| config.name.as_deref() == Some(target))
        .map(|(extension, _)| extension.clone())
        .or_else(|| {
            settings
                .devices()
                .into_iter()
                .find(|d| d.name == target)
                .map(|d| d.extension.to_string())
        });
    if let Some(extension) = named {
        return Some(device(&extension));
    }
    let number = normalize(target, settings.default_region)?;
    let did = choose_did(
        settings,
        snapshot,
        &context.registry,
        decision,
        number.country.as_deref(),
    )?;
    // The outside phone sees who is calling; a caller ID that is not a plain number (or
    // none) is left to the gateway's default.
    let caller = call.peer_number.trim_start_matches('+');
    let caller_id_number = (!caller.is_empty() && caller.bytes().all(|b| b.is_ascii_digit()))
        .then(|| caller.to_owned());
    Some(Ring {
        label: target.to_owned(),
        dial: format!("sofia/gateway/{}/{}", did.gateway_name, number.e164),
        caller_id_number,
    })
}

/// The mid-call features of one call: digits from the event link, targets as the rules'
/// `bridge_to` would read them.
struct CallFeatures<'a> {
    decision: &'a Decision,
    snapshot: &'a Snapshot,
    context: &'a Context,
    call: &'a Call,
}

impl Features for CallFeatures<'_> {
    fn leg_digits(&self, uuid: &str) -> tokio::sync::mpsc::UnboundedReceiver<char> {
        self.context.registry.watch_leg_digits(uuid)
    }

    fn transfer_target(&self, target: &str) -> Option<Ring> {
        // Typed on a keypad: digits and `+` only, whatever the event said.
        if target.is_empty() || !target.chars().all(|c| c.is_ascii_digit() || c == '+') {
            return None;
        }
        let mut ring = ring_target(
            target,
            self.decision,
            self.snapshot,
            self.context,
            self.call,
        )?;
        if ring.label == target && target.len() > 6 {
            if let Some(number) = normalize(target, self.context.settings.default_region) {
                ring.label = who("", &number.e164);
            }
        }
        Some(ring)
    }
}

async fn inbound(
    control: &dyn CallControl,
    call: &Call,
    decision: &Decision,
    snapshot: &Snapshot,
    context: &Context,
    record: &mut CallRecord,
) -> (Story, Option<(InboundPlan, String)>) {
    let settings = &context.settings;
    let did = call
        .did
        .as_deref()
        .and_then(|number| find_did(settings, number));
    let number_words = match did {
        Some(did) => which_number(
            &did_number(did, settings.default_region),
            did_country(did, snapshot, settings.default_region).as_deref(),
        ),
        None => format!("your number {}", call.destination_number),
    };
    let mut story = Story::begin(format!(
        "{} called {number_words}",
        who(call.peer_name(), &call.peer_number)
    ));
    if let Some(cause) = decision.hangup() {
        story.step(format!(
            "hung up by your rules ({})",
            cause.to_lowercase().replace('_', " ")
        ));
        let _ = control.hangup(cause).await;
        record.outcome = Outcome::Declined;
        record.hangup_cause = Some(cause.to_owned());
        return (story, None);
    }
    let ring = rings(decision, snapshot, context, call);
    let straight_to_voicemail = if decision.decline() && call.do_not_disturb {
        Some(StraightToVoicemail::DoNotDisturb)
    } else if decision.decline() {
        Some(StraightToVoicemail::Declined)
    } else if call.busy {
        Some(StraightToVoicemail::Busy)
    } else if ring.is_empty() {
        Some(StraightToVoicemail::NothingToRing)
    } else {
        None
    };
    let greeting = decision.voicemail_greeting().map(|name| {
        // A rule may give a name ("wave_fr.wav") or a path greeting() already resolved.
        snapshot
            .greetings()
            .resolve(
                name,
                record.language.as_deref(),
                call.contact.as_ref().map(|contact| contact.uid.as_str()),
            )
            .map(str::to_owned)
            .unwrap_or_else(|| name.to_owned())
    });
    let recording_path = settings
        .recordings_dir
        .join(format!("vm-{}.wav", call.uuid));
    let plan = InboundPlan {
        ring_for: Duration::from_secs(u64::from(
            decision
                .voicemail_delay()
                .unwrap_or(settings.voicemail_delay),
        )),
        straight_to_voicemail,
        greeting,
        recording_path: recording_path.to_string_lossy().into_owned(),
        reoffer_for: Duration::from_secs(u64::from(settings.reoffer_seconds)),
        voicemail: context.voicemail.clone(),
        conversation_path: decision.record().then(|| {
            settings
                .recordings_dir
                .join(format!("call-{}.wav", file_name_part(&call.uuid)))
                .to_string_lossy()
                .into_owned()
        }),
        ring,
    };
    if straight_to_voicemail.is_none() {
        record.devices_rung = plan.ring.iter().map(|ring| ring.label.clone()).collect();
    }
    let away = run_inbound_plan(
        control, &plan, call, decision, snapshot, context, record, &mut story,
    )
    .await;
    (story, away.map(|by| (plan, by)))
}

/// Runs an inbound plan and fills the record in; returns the label of the device that had
/// answered when FreeSWITCH transferred the call away (the call goes on elsewhere).
#[allow(clippy::too_many_arguments)]
async fn run_inbound_plan(
    control: &dyn CallControl,
    plan: &InboundPlan,
    call: &Call,
    decision: &Decision,
    snapshot: &Snapshot,
    context: &Context,
    record: &mut CallRecord,
    story: &mut Story,
) -> Option<String> {
    let features = CallFeatures {
        decision,
        snapshot,
        context,
        call,
    };
    let mut handovers = Handovers::default();
    let outcome = flow::inbound(control, plan, &features, story, &mut handovers).await;
    let talked = matches!(
        outcome,
        Ok(InboundOutcome::Answered { .. } | InboundOutcome::TransferredAway { .. })
    );
    if let (Some(path), false) = (&plan.conversation_path, talked) {
        // Nobody answered: nothing of a conversation to keep (FreeSWITCH writes no file
        // before the answer; this clears one left by a call cut at the wrong moment).
        let _ = std::fs::remove_file(path);
    }
    for transfer in &handovers.transfers {
        if !record.devices_rung.contains(&transfer.to) {
            record.devices_rung.push(transfer.to.clone());
        }
    }
    record.transfers.extend(handovers.transfers);
    record.drops.extend(handovers.drops);
    if !handovers.conference.is_empty() {
        for label in &handovers.conference {
            if !record.devices_rung.contains(label) {
                record.devices_rung.push(label.clone());
            }
        }
        record.conference = handovers.conference;
    }
    match outcome {
        Ok(InboundOutcome::TransferredAway { by, .. }) => {
            let by = by.unwrap_or_else(|| "a device".to_owned());
            // What the record says if the transfer's own session never takes it over.
            record.outcome = Outcome::Answered {
                by_device: by.clone(),
                talk_secs: 0,
            };
            return Some(by);
        }
        Ok(InboundOutcome::Answered { by, conversation }) => {
            record.outcome = Outcome::Answered {
                by_device: by.unwrap_or_else(|| "a device".to_owned()),
                talk_secs: 0,
            };
            record.conversation = conversation.map(Into::into);
        }
        Ok(InboundOutcome::Voicemail { path, ms, .. }) => {
            record.outcome = Outcome::Voicemail {
                recording: path.into(),
                duration_secs: ms / 1000,
            };
        }
        Ok(InboundOutcome::Missed(_)) => {
            record.outcome = if decision.decline() {
                Outcome::Declined
            } else {
                Outcome::Missed
            };
        }
        Err(error) => {
            story.step(format!("the call broke off ({error})"));
            record.outcome = Outcome::Missed;
        }
    }
    None
}

async fn outbound(
    control: &dyn CallControl,
    incoming: &Incoming,
    call: &Call,
    decision: &Decision,
    snapshot: &Snapshot,
    context: &Context,
    record: &mut CallRecord,
) -> Story {
    let settings = &context.settings;
    let from = device_label(snapshot, settings, &incoming.caller_id_number);
    let destination = &incoming.destination_number;
    let mut story;
    let plan = if is_extension(settings, destination) {
        story = Story::begin(format!(
            "{from} called {}",
            device_label(snapshot, settings, destination)
        ));
        OutboundPlan {
            target: Ring {
                label: destination.clone(),
                dial: format!("user/{destination}@{}", sip_domain(settings)),
                caller_id_number: None,
            },
            caller_id: None,
            ring_for: Duration::from_secs(60),
        }
    } else {
        story = Story::begin(format!(
            "{from} called {}",
            who(
                // On a device's call the caller ID name is the device's own: the other
                // party is known only through the address book.
                call.contact
                    .as_ref()
                    .map_or("", |contact| contact.name.as_str()),
                &call.peer_number
            )
        ));
        let Some(number) = normalize(destination, settings.default_region) else {
            story.step("not a number that can be called");
            let _ = control.hangup("INVALID_NUMBER_FORMAT").await;
            record.outcome = Outcome::Outgoing {
                from_device: from,
                answered: false,
                talk_secs: 0,
            };
            record.hangup_cause = Some("INVALID_NUMBER_FORMAT".to_owned());
            return story;
        };
        let Some(did) = choose_did(
            settings,
            snapshot,
            &context.registry,
            decision,
            number.country.as_deref(),
        ) else {
            story.step("no phone number is configured to call out");
            let _ = control.hangup("NO_ROUTE_DESTINATION").await;
            record.outcome = Outcome::Outgoing {
                from_device: from,
                answered: false,
                talk_secs: 0,
            };
            record.hangup_cause = Some("NO_ROUTE_DESTINATION".to_owned());
            return story;
        };
        let did_e164 = did_number(did, settings.default_region);
        record.did = Some(did_e164.clone());
        story.step(format!(
            "through {}",
            which_number(
                &did_e164,
                did_country(did, snapshot, settings.default_region).as_deref()
            )
        ));
        let language = decision
            .language()
            .map(str::to_owned)
            .or_else(|| did.language.clone());
        let name = decision.caller_id().map(str::to_owned).or_else(|| {
            settings
                .caller_id_name(language.as_deref().map(str::to_uppercase).as_deref())
                .map(str::to_owned)
        });
        OutboundPlan {
            target: Ring {
                label: number.e164.clone(),
                dial: format!("sofia/gateway/{}/{}", did.gateway_name, number.e164),
                caller_id_number: None,
            },
            caller_id: name.map(|name| (name, did_e164)),
            ring_for: Duration::from_secs(60),
        }
    };
    let answered = matches!(
        flow::outbound(control, &plan, &mut story).await,
        Ok(OutboundOutcome::Answered)
    );
    record.outcome = Outcome::Outgoing {
        from_device: from,
        answered,
        talk_secs: 0,
    };
    story
}

/// Drives a rules `dialplan` closure (a menu such as `*86`) on a blocking thread: the
/// closure is synchronous, the call is not. What the menu did goes into the story.
#[allow(clippy::too_many_arguments)]
async fn run_dialplan(
    control: Arc<dyn CallControl>,
    call: &Call,
    decision: &Decision,
    snapshot: &Arc<Snapshot>,
    resources: &SharedResources,
    context: &Arc<Context>,
    device: String,
    story: &mut Story,
) {
    let handle = tokio::runtime::Handle::current();
    let (call, decision, snapshot, resources, context) = (
        call.clone(),
        decision.clone(),
        Arc::clone(snapshot),
        Arc::clone(resources),
        Arc::clone(context),
    );
    let result = tokio::task::spawn_blocking(move || {
        let mut script = BlockingScript {
            control,
            handle,
            language: decision.language().map(str::to_owned),
            snapshot: Arc::clone(&snapshot),
            context,
            device,
            steps: Vec::new(),
            recordings: 0,
        };
        let result = snapshot
            .rules()
            .run_dialplan(&decision, &call, &resources, &mut script);
        (result, script.steps)
    })
    .await;
    match result {
        Ok((result, steps)) => {
            for step in steps {
                story.step(step);
            }
            match result {
                Ok(()) => story.step("menu finished"),
                Err(error) => story.step(format!("menu stopped: {error}")),
            }
        }
        Err(error) => story.step(format!("menu crashed: {error}")),
    }
}

/// [`CallScript`] over a live call, blocking the script's thread on each step.
struct BlockingScript {
    control: Arc<dyn CallControl>,
    handle: tokio::runtime::Handle,
    /// The call's language, to find the language's version of a sound the menu plays.
    language: Option<String>,
    snapshot: Arc<Snapshot>,
    context: Arc<Context>,
    /// The device that opened the menu, as the journal names it.
    device: String,
    /// What the menu did, for the call's journal line.
    steps: Vec<String>,
    /// Recordings made so far on this call (each gets its own file).
    recordings: u32,
}

fn script_error(error: impl std::fmt::Display) -> ScriptError {
    ScriptError::new(error.to_string())
}

/// Keeps the characters safe in a file name; caps the length.
fn file_name_part(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .take(64)
        .collect()
}

impl BlockingScript {
    /// Records the caller into a new file of `recordings_dir` after an optional beep.
    fn record_to(
        &mut self,
        prefix: &str,
        max_seconds: u32,
        beep: bool,
    ) -> Result<super::control::RecordOutcome, ScriptError> {
        if beep {
            self.play(&self.context.voicemail.beep.clone())?;
        }
        self.recordings += 1;
        let path = self.context.settings.recordings_dir.join(format!(
            "{prefix}-{}-{}.wav",
            file_name_part(self.control.uuid()),
            self.recordings
        ));
        let request = RecordRequest {
            path: path.to_string_lossy().into_owned(),
            max: Duration::from_secs(u64::from(max_seconds)),
            silence_threshold: Some(self.context.voicemail.silence_threshold),
            silence: Duration::from_secs(3),
        };
        self.handle
            .block_on(self.control.record(&request))
            .map_err(script_error)
    }

    /// Commits a recorded greeting to the phone repo; `Ok` with the journal line.
    fn commit_greeting(
        &self,
        name: &str,
        recording: &std::path::Path,
        length: &str,
    ) -> Result<String, String> {
        let bytes = std::fs::read(recording).map_err(|error| error.to_string())?;
        crate::voicemail::read_wav(recording).map_err(|error| error.to_string())?;
        let message = format!(
            "Greeting {name} recorded on the phone\n\nRecorded by patchbay from {} (*86 menu), {length} long.\n",
            self.device
        );
        let committed = crate::repo::commit_file(
            &self.context.settings.repo,
            &format!("{}{name}", crate::repo::GREETINGS_FOLDER),
            &bytes,
            &message,
        )
        .map_err(|error| error.to_string())?;
        let short = committed.commit.get(..7).unwrap_or(&committed.commit);
        let mut line = format!(
            "greeting {name} recorded from {} ({length}) and committed to the phone repo ({short})",
            self.device
        );
        if let Some(note) = committed.note {
            line.push_str(&format!("; {note}"));
        }
        Ok(line)
    }
}

impl CallScript for BlockingScript {
    fn answer(&mut self) -> Result<(), ScriptError> {
        self.handle
            .block_on(self.control.answer())
            .map_err(script_error)
    }

    /// A greeting name of the phone repo ("menu_en.wav") plays the exported file; anything
    /// else goes to FreeSWITCH as given (a path, a `tone_stream://`).
    fn play(&mut self, file: &str) -> Result<(), ScriptError> {
        let resolved = self
            .snapshot
            .greetings()
            .resolve(file, self.language.as_deref(), None)
            .map(str::to_owned)
            .unwrap_or_else(|| file.to_owned());
        self.handle
            .block_on(self.control.playback(&resolved))
            .map(|_| ())
            .map_err(script_error)
    }

    fn get_digits(&mut self, max_digits: u32, timeout_ms: u64) -> Result<String, ScriptError> {
        let request = DigitsRequest {
            min: 1,
            max: max_digits.max(1),
            timeout: Duration::from_millis(timeout_ms),
            terminators: "#".to_owned(),
            prompt: None,
        };
        self.handle
            .block_on(self.control.get_digits(&request))
            .map(Option::unwrap_or_default)
            .map_err(script_error)
    }

    fn record(&mut self, options: &RecordOptions) -> Result<String, ScriptError> {
        let prefix = options
            .name
            .as_deref()
            .map(file_name_part)
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "memo".to_owned());
        self.record_to(&prefix, options.max_seconds, options.beep)
            .map(|outcome| outcome.path)
    }

    fn transfer(&mut self, extension: &str) -> Result<(), ScriptError> {
        Err(ScriptError::new(format!(
            "transfer to {extension}: transfers are not supported yet"
        )))
    }

    fn hangup(&mut self, cause: &str) -> Result<(), ScriptError> {
        self.handle
            .block_on(self.control.hangup(cause))
            .map_err(script_error)
    }

    /// Plays the new messages oldest first, marking each heard once it played to its end.
    fn play_new_voicemails(&mut self) -> Result<u32, ScriptError> {
        let mailbox = Arc::clone(&self.context.mailbox);
        let messages = mailbox.new_messages().map_err(|error| {
            ScriptError::new(format!(
                "cannot read the voicemails in {}: {error}",
                mailbox.dir().display()
            ))
        })?;
        let mut played = 0;
        for message in &messages {
            let path = message.to_string_lossy();
            let outcome = self
                .handle
                .block_on(self.control.playback(&path))
                .map_err(script_error)?;
            match outcome {
                PlaybackOutcome::Played => {
                    played += 1;
                    if let Err(error) = mailbox.mark_heard(message) {
                        self.context.journal.write(format!(
                            "a voicemail played on {} could not be marked as heard: {error}",
                            self.device
                        ));
                    }
                }
                PlaybackOutcome::NotFound => {
                    tracing::warn!("voicemail {path} not found by FreeSWITCH; skipped");
                }
                PlaybackOutcome::Interrupted { .. } => break,
            }
        }
        self.steps.push(match (played, messages.len()) {
            (0, 0) => "no new voicemail".to_owned(),
            (1, 1) => "played the new voicemail".to_owned(),
            (played, total) if played as usize == total => {
                format!("played {played} new voicemails")
            }
            (played, total) => format!("played {played} of {total} new voicemails"),
        });
        Ok(played)
    }

    fn record_greeting(&mut self, name: &str) -> Result<bool, ScriptError> {
        let name = name.trim().trim_start_matches('/');
        let name = if name.to_ascii_lowercase().ends_with(".wav") {
            name.to_owned()
        } else {
            format!("{name}.wav")
        };
        let recorded = self.record_to("greeting", 120, true)?;
        let recording = std::path::PathBuf::from(&recorded.path);
        // The same boundary as voicemail, in milliseconds on both sides.
        let min_ms = u64::try_from(self.context.voicemail.min_length.as_millis()).unwrap_or(0);
        if recorded.ms < min_ms {
            let _ = std::fs::remove_file(&recording);
            self.steps
                .push(format!("greeting {name} too short, not kept"));
            return Ok(false);
        }
        let length = crate::journal::clock_duration(recorded.ms / 1000);
        match self.commit_greeting(&name, &recording, &length) {
            Ok(line) => {
                let _ = std::fs::remove_file(&recording);
                self.context.journal.write(line);
                self.steps.push(format!("recorded greeting {name}"));
                Ok(true)
            }
            Err(error) => {
                self.context.journal.write(format!(
                    "greeting {name} recorded from {} ({length}) but not committed to the phone repo: {error}; the recording is kept at {}",
                    self.device,
                    recording.display()
                ));
                self.steps
                    .push(format!("greeting {name} recorded, not committed"));
                Ok(false)
            }
        }
    }

    fn toggle_do_not_disturb(&mut self) -> Result<bool, ScriptError> {
        let now = (self.context.clock)();
        let on = self.context.do_not_disturb.toggle(now).map_err(|error| {
            ScriptError::new(format!("cannot save the do-not-disturb switch: {error}"))
        })?;
        self.context.journal.write(if on {
            format!(
                "do-not-disturb is on (switched on {}): calls from outside go straight to voicemail",
                self.device
            )
        } else {
            format!(
                "do-not-disturb is off (switched on {}): calls from outside ring your phones again",
                self.device
            )
        });
        self.steps
            .push(format!("do-not-disturb {}", if on { "on" } else { "off" }));
        Ok(on)
    }
}

/// Runs the rules' `on(...)` handlers for how the call ended, off the call's path.
fn run_event_handlers(
    snapshot: &Arc<Snapshot>,
    resources: &SharedResources,
    call: &Call,
    record: &CallRecord,
    journal: &Journal,
) {
    let event = match record.outcome {
        Outcome::Missed | Outcome::Declined => "missed",
        Outcome::Voicemail { .. } => "voicemail",
        Outcome::Answered { .. } => "call::answered",
        Outcome::Outgoing { .. } => "state::hangup",
    };
    if snapshot.rules().handler_count(event) == 0 {
        return;
    }
    let (snapshot, resources, call, journal) = (
        Arc::clone(snapshot),
        Arc::clone(resources),
        call.clone(),
        journal.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let outcome =
            snapshot
                .rules()
                .run_event(event, &call, &crate::rules::Value::Unit, &resources);
        for line in outcome.logs {
            journal.write(line);
        }
        for error in outcome.errors {
            journal.write(format!(
                "rule problem in an `on(\"{event}\")` handler: {error}"
            ));
        }
    });
}
