//! Dialing B legs for `bridge` and `originate`: comma-separated endpoints ring at once and the
//! first answer wins (the others get LOSE_RACE), `|` tries groups in turn; each device answers,
//! rings forever, is busy or is unregistered as the scenario says.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::calls::{now_us, Channel, ChannelData, Control, Profile};
use super::flow::{q850, Interrupt as BridgeInterrupt, Leg as ALeg};
use super::log::Entry;
use super::scenario::Behaviour;
use super::{lock_mutex, Inner};

/// A B leg that answered.
pub(crate) struct BLeg {
    pub(crate) channel: Arc<Channel>,
    pub(crate) controls: mpsc::UnboundedReceiver<Control>,
    pub(crate) hangup_after: Option<f64>,
    mid_call: MidCall,
    /// The device's extension, or the endpoint for a number.
    pub(crate) device: String,
}

/// What an answering device does during the call, from the scenario; each act happens on the
/// device's first answered call only (see `Inner::acted`).
#[derive(Clone, Debug, Default)]
struct MidCall {
    /// Seconds after the bridge when the device's media stops, and the cause FreeSWITCH gives.
    drop: Option<(f64, String)>,
    /// Seconds after the bridge when its user presses these digits.
    press: Option<(f64, String)>,
    /// Seconds after the bridge when it sends a REFER to this target.
    refer: Option<(f64, String)>,
}

impl MidCall {
    fn of(device: &super::scenario::Device) -> MidCall {
        MidCall {
            drop: device.drop_after.map(|after| {
                (
                    after,
                    device
                        .drop_cause
                        .clone()
                        .unwrap_or_else(|| "MEDIA_TIMEOUT".to_owned()),
                )
            }),
            press: device
                .press
                .clone()
                .map(|digits| (device.press_after.unwrap_or(1.0), digits)),
            refer: device
                .refer_to
                .clone()
                .map(|target| (device.refer_after.unwrap_or(1.0), target)),
        }
    }
}

pub(crate) enum DialOutcome {
    Answered(BLeg),
    Failed(String),
}

/// One endpoint being rung.
struct Ringer {
    device: String,
    channel: Arc<Channel>,
    controls: mpsc::UnboundedReceiver<Control>,
    answer_at: Option<Instant>,
    fail: Option<(Instant, &'static str)>,
    hangup_after: Option<f64>,
    mid_call: MidCall,
    done: bool,
}

/// Variables from `{a=b,c=d}` and the endpoint list.
fn split_dialstring(dialstring: &str) -> (Vec<(String, String)>, &str) {
    let trimmed = dialstring.trim();
    if let Some(rest) = trimmed.strip_prefix('{') {
        if let Some((vars, tail)) = rest.split_once('}') {
            let vars = vars
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect();
            return (vars, tail);
        }
    }
    (Vec::new(), trimmed)
}

/// Splits a dial string on `separator` (`,` between endpoints, `|` between groups), but not
/// inside a leg's `[a=b,c=d]` or `{...}`, as FreeSWITCH's originate reads it.
fn split_endpoints(dial: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (at, c) in dial.char_indices() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth = depth.saturating_sub(1),
            c if c == separator && depth == 0 => {
                parts.push(&dial[start..at]);
                start = at + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&dial[start..]);
    parts
}

/// Strips `[leg vars]` from one endpoint and returns its leg_timeout if any.
fn strip_leg_vars(endpoint: &str) -> (&str, Option<f64>) {
    let endpoint = endpoint.trim();
    if let Some(rest) = endpoint.strip_prefix('[') {
        if let Some((vars, tail)) = rest.split_once(']') {
            let timeout = vars
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k.trim() == "leg_timeout")
                .and_then(|(_, v)| v.trim().parse().ok());
            return (tail.trim(), timeout);
        }
    }
    (endpoint, None)
}

/// What an endpoint resolves to.
enum Target {
    Device { extension: String },
    Gateway { number: String },
    Fail(String),
}

fn resolve(inner: &Inner, endpoint: &str) -> Target {
    if let Some(rest) = endpoint.strip_prefix("user/") {
        let extension = rest.split('@').next().unwrap_or("").to_owned();
        return Target::Device { extension };
    }
    if let Some(rest) = endpoint.strip_prefix("sofia/gateway/") {
        let (gateway, number) = rest.split_once('/').unwrap_or((rest, ""));
        if !lock_mutex(&inner.gateways).contains_key(gateway) {
            return Target::Fail("INVALID_GATEWAY".into());
        }
        return Target::Gateway {
            number: number.to_owned(),
        };
    }
    if let Some(rest) = endpoint.strip_prefix("sofia/internal/") {
        let extension = rest.split('@').next().unwrap_or("").to_owned();
        return Target::Device { extension };
    }
    if let Some(cause) = endpoint.strip_prefix("error/") {
        return Target::Fail(cause.to_owned());
    }
    Target::Fail("CHAN_NOT_IMPLEMENTED".into())
}

/// Creates a B leg and emits what FreeSWITCH emits for it: OUTGOING twice, STATE, CREATE,
/// ORIGINATE, then PROGRESS.
fn create_leg(
    inner: &Inner,
    name: String,
    destination: &str,
    caller: &Profile,
    endpoint: &str,
) -> (Arc<Channel>, mpsc::UnboundedReceiver<Control>) {
    let uuid = uuid::Uuid::new_v4().to_string();
    let data = ChannelData {
        name: name.clone(),
        direction: "outbound",
        state: 0,
        call_state: "DOWN",
        answer_state: "ringing",
        profile: Profile {
            username: caller.username.clone(),
            dialplan: "XML".into(),
            cid_name: caller.cid_name.clone(),
            cid_num: caller.cid_num.clone(),
            callee_name: Some("Outbound Call".into()),
            callee_num: Some(destination.to_owned()),
            network_addr: "127.0.0.1".into(),
            destination: destination.to_owned(),
            context: "default".into(),
        },
        created_us: now_us(),
        vars: vec![
            ("direction".into(), "outbound".into()),
            ("uuid".into(), uuid.clone()),
            ("channel_name".into(), name),
            ("originate_endpoint".into(), endpoint.to_owned()),
        ],
        ..ChannelData::default()
    };
    let (channel, controls) = Channel::create(inner, uuid, data);
    let outgoing = (
        "switch_core_session.c",
        "switch_core_session_outgoing_channel",
        738,
    );
    for _ in 0..2 {
        inner.emit(channel.event(inner, "CHANNEL_OUTGOING", outgoing, true, &[], &[]));
    }
    inner.emit(channel.event(
        inner,
        "CHANNEL_STATE",
        (
            "switch_channel.c",
            "switch_channel_perform_set_running_state",
            2408,
        ),
        false,
        &[],
        &[],
    ));
    inner.emit(channel.event(
        inner,
        "CHANNEL_CREATE",
        ("switch_core_state_machine.c", "switch_core_session_run", 1),
        true,
        &[],
        &[],
    ));
    inner.emit(channel.event(
        inner,
        "CHANNEL_ORIGINATE",
        ("switch_ivr_originate.c", "switch_ivr_originate", 3919),
        true,
        &[],
        &[],
    ));
    channel.with_data(|d| d.progress_us = now_us());
    inner.emit(channel.event(
        inner,
        "CHANNEL_PROGRESS",
        ("sofia.c", "sofia_handle_sip_i_state", 1),
        true,
        &[],
        &[],
    ));
    channel.set_call_state(inner, "RINGING");
    (channel, controls)
}

/// Hangs up a B leg: HANGUP, STATE, HANGUP_COMPLETE, DESTROY.
pub(crate) fn hangup_leg(inner: &Inner, channel: &Channel, cause: &str, disposition: &str) {
    if channel.is_down() {
        return;
    }
    if channel.has_crashed() {
        channel.mark_down();
        return;
    }
    channel.with_data(|d| {
        d.hangup_cause = Some(cause.to_owned());
        d.hangup_us = now_us();
        d.state = 10;
        d.answer_state = "hangup";
    });
    channel.set_var("hangup_cause", cause);
    channel.set_var("hangup_cause_q850", &q850(cause).to_string());
    channel.set_var("sip_hangup_disposition", disposition);
    inner.emit(channel.event(
        inner,
        "CHANNEL_HANGUP",
        ("switch_channel.c", "switch_channel_perform_hangup", 3104),
        true,
        &[],
        &[],
    ));
    channel.with_data(|d| d.state = 11);
    inner.emit(channel.event(
        inner,
        "CHANNEL_STATE",
        (
            "switch_channel.c",
            "switch_channel_perform_set_running_state",
            2408,
        ),
        false,
        &[],
        &[],
    ));
    channel.set_call_state(inner, "HANGUP");
    inner.emit(channel.event(
        inner,
        "CHANNEL_HANGUP_COMPLETE",
        (
            "switch_core_state_machine.c",
            "switch_core_session_reporting_state",
            943,
        ),
        true,
        &[("Hangup-Cause", cause)],
        &[],
    ));
    channel.mark_down();
    channel.with_data(|d| d.state = 12);
    inner.emit(channel.event(
        inner,
        "CHANNEL_DESTROY",
        (
            "switch_core_session.c",
            "switch_core_session_perform_destroy",
            1,
        ),
        true,
        &[],
        &[],
    ));
    lock_mutex(&inner.channels).remove(channel.uuid());
}

/// Why ringing stopped without a winner.
enum Stopped {
    Failed(String),
    Cancelled(BridgeInterrupt),
}

/// Rings one group of endpoints at once. `a_leg` lets the caller cancel (hangup, kill).
async fn ring_group(
    inner: &Arc<Inner>,
    endpoints: &[&str],
    caller: &Profile,
    timeout: Duration,
    mut a_leg: Option<&mut ALeg>,
) -> Result<(BLeg, String), Stopped> {
    let mut ringers: Vec<Ringer> = Vec::new();
    let mut first_failure: Option<String> = None;
    let call = caller.cid_num.clone();
    let scenario = lock_mutex(&inner.scenario).clone();
    for raw in endpoints {
        let (endpoint, leg_timeout) = strip_leg_vars(raw);
        // `[leg_timeout=N]` ends this leg's ringing with NO_ANSWER unless something comes first.
        let leg_deadline = leg_timeout.map(|s| (Instant::now() + inner.scaled(s), "NO_ANSWER"));
        match resolve(inner, endpoint) {
            Target::Fail(cause) => {
                first_failure.get_or_insert(cause);
            }
            Target::Device { extension } => {
                let device = scenario.device(&extension).cloned();
                let registered = lock_mutex(&inner.registrations).contains_key(&extension);
                let acted = lock_mutex(&inner.acted).contains(&extension);
                let behaviour = device
                    .as_ref()
                    .map(|d| match (acted, d.after_drop) {
                        (true, Some(after)) => after,
                        _ => d.behaviour,
                    })
                    .unwrap_or_default();
                let mid_call = match &device {
                    Some(device) if !acted => MidCall::of(device),
                    _ => MidCall::default(),
                };
                if !registered || behaviour == Behaviour::Unregistered {
                    first_failure.get_or_insert_with(|| "USER_NOT_REGISTERED".into());
                    continue;
                }
                let port = lock_mutex(&inner.registrations)
                    .get(&extension)
                    .map(|r| r.network_port)
                    .unwrap_or(5060);
                let name = format!("sofia/internal/{extension}@127.0.0.1:{port}");
                let (channel, controls) = create_leg(inner, name, &extension, caller, endpoint);
                inner.log().push(Entry::DeviceRang {
                    device: extension.clone(),
                    call: call.clone(),
                });
                let now = Instant::now();
                let (answer_at, fail) = match behaviour {
                    Behaviour::Answer => (
                        Some(now + inner.scaled(device.as_ref().map_or(1.0, |d| d.answer_after))),
                        None,
                    ),
                    Behaviour::NoAnswer => (None, None),
                    Behaviour::Busy => (None, Some((now + inner.scaled(0.2), "USER_BUSY"))),
                    Behaviour::Unregistered => (None, Some((now, "USER_NOT_REGISTERED"))),
                };
                let fail = match (fail, leg_deadline) {
                    (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
                    (a, b) => a.or(b),
                };
                ringers.push(Ringer {
                    device: extension,
                    channel,
                    controls,
                    answer_at,
                    fail,
                    hangup_after: device.and_then(|d| d.hangup_after),
                    mid_call,
                    done: false,
                });
            }
            Target::Gateway { number } => {
                let name = format!("sofia/external/{number}");
                let (channel, controls) = create_leg(inner, name, &number, caller, endpoint);
                ringers.push(Ringer {
                    device: endpoint.to_owned(),
                    channel,
                    controls,
                    answer_at: Some(Instant::now() + inner.scaled(1.0)),
                    fail: None,
                    hangup_after: None,
                    mid_call: MidCall::default(),
                    done: false,
                });
            }
        }
    }
    if ringers.is_empty() {
        return Err(Stopped::Failed(
            first_failure.unwrap_or_else(|| "NO_ROUTE_DESTINATION".into()),
        ));
    }
    // The caller hears ringing once a leg rings (180 relayed to the A leg).
    if let Some(a) = a_leg.as_mut() {
        a.ringing();
    }
    let deadline = Instant::now() + timeout;
    loop {
        let next_answer = ringers
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.done)
            .filter_map(|(i, r)| r.answer_at.map(|t| (t, i)))
            .min();
        let next_fail = ringers
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.done)
            .filter_map(|(i, r)| r.fail.map(|(t, _)| (t, i)))
            .min();
        let caller_hangup = a_leg.as_ref().and_then(|a| a.caller_hangup_at());
        let wake = [
            next_answer.map(|(t, _)| t),
            next_fail.map(|(t, _)| t),
            Some(deadline),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(deadline);
        let event = tokio::select! {
            _ = tokio::time::sleep_until(wake) => None,
            _ = sleep_opt(caller_hangup), if caller_hangup.is_some_and(|t| t <= wake) => Some(BridgeInterrupt::CallerHangup),
            interrupt = next_a_control(&mut a_leg) => interrupt,
        };
        if let Some(interrupt) = event {
            for ringer in ringers.iter_mut().filter(|r| !r.done) {
                hangup_leg(inner, &ringer.channel, "ORIGINATOR_CANCEL", "send_cancel");
                ringer.done = true;
            }
            return Err(Stopped::Cancelled(interrupt));
        }
        let now = Instant::now();
        // Due events are handled in the order they were scheduled, even when the task woke up
        // late: a leg that timed out before another answered never loses the race.
        let fail_first = match (next_answer, next_fail) {
            (Some((answer_at, _)), Some((fail_at, _))) => fail_at <= answer_at,
            _ => false,
        };
        if let Some((_, winner)) = next_answer.filter(|(t, _)| *t <= now && !fail_first) {
            for (i, ringer) in ringers.iter_mut().enumerate() {
                if i != winner && !ringer.done {
                    hangup_leg(inner, &ringer.channel, "LOSE_RACE", "send_cancel");
                    inner.log().push(Entry::DeviceLostRace {
                        device: ringer.device.clone(),
                        call: call.clone(),
                    });
                    ringer.done = true;
                }
            }
            let ringer = ringers.swap_remove(winner);
            ringer.channel.with_data(|d| {
                d.answered_us = now_us();
                d.answer_state = "answered";
            });
            inner.emit(ringer.channel.event(
                inner,
                "CHANNEL_ANSWER",
                (
                    "switch_channel.c",
                    "switch_channel_perform_mark_answered",
                    3996,
                ),
                true,
                &[],
                &[],
            ));
            ringer.channel.set_call_state(inner, "ACTIVE");
            inner.log().push(Entry::DeviceAnswered {
                device: ringer.device.clone(),
                call: call.clone(),
            });
            let device = ringer.device.clone();
            return Ok((
                BLeg {
                    channel: ringer.channel,
                    controls: ringer.controls,
                    hangup_after: ringer.hangup_after,
                    mid_call: ringer.mid_call,
                    device: ringer.device.clone(),
                },
                device,
            ));
        }
        if let Some((_, failed)) = next_fail.filter(|(t, _)| *t <= now) {
            let ringer = &mut ringers[failed];
            let cause = ringer
                .fail
                .map(|(_, c)| c)
                .unwrap_or("NORMAL_TEMPORARY_FAILURE");
            hangup_leg(inner, &ringer.channel, cause, "recv_refuse");
            if cause == "USER_BUSY" {
                inner.log().push(Entry::DeviceBusy {
                    device: ringer.device.clone(),
                    call: call.clone(),
                });
            }
            ringer.done = true;
            first_failure.get_or_insert_with(|| cause.to_owned());
            if ringers.iter().all(|r| r.done) {
                return Err(Stopped::Failed(
                    first_failure.unwrap_or_else(|| cause.to_owned()),
                ));
            }
            continue;
        }
        if now >= deadline {
            for ringer in ringers.iter_mut().filter(|r| !r.done) {
                hangup_leg(inner, &ringer.channel, "NO_ANSWER", "send_cancel");
                ringer.done = true;
            }
            return Err(Stopped::Failed("NO_ANSWER".into()));
        }
    }
}

async fn next_a_control(a_leg: &mut Option<&mut ALeg>) -> Option<BridgeInterrupt> {
    match a_leg {
        Some(leg) => loop {
            if let Some(interrupt) = leg.next_control().await {
                return Some(interrupt);
            }
        },
        None => std::future::pending().await,
    }
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Dials for `originate`: groups in turn, no A leg.
pub(crate) async fn dial(inner: &Arc<Inner>, dialstring: &str) -> DialOutcome {
    let (vars, endpoints) = split_dialstring(dialstring);
    let timeout = vars
        .iter()
        .find(|(k, _)| k == "originate_timeout" || k == "call_timeout")
        .and_then(|(_, v)| v.parse::<f64>().ok())
        .unwrap_or(60.0);
    let caller = Profile {
        username: "fsim".into(),
        cid_name: "Outbound Call".into(),
        cid_num: "0000000000".into(),
        ..Profile::default()
    };
    let mut last = "NO_ROUTE_DESTINATION".to_owned();
    for group in split_endpoints(endpoints, '|') {
        let list: Vec<&str> = split_endpoints(group, ',')
            .into_iter()
            .filter(|e| !e.trim().is_empty())
            .collect();
        match ring_group(inner, &list, &caller, inner.scaled(timeout), None).await {
            Ok((leg, _)) => return DialOutcome::Answered(leg),
            Err(Stopped::Failed(cause)) => last = cause,
            Err(Stopped::Cancelled(_)) => return DialOutcome::Failed("ORIGINATOR_CANCEL".into()),
        }
    }
    DialOutcome::Failed(last)
}

/// An originated leg parks until it is killed or its device hangs up.
pub(crate) async fn park_leg(inner: Arc<Inner>, mut leg: BLeg) {
    let hangup = leg.hangup_after.map(|s| Instant::now() + inner.scaled(s));
    loop {
        tokio::select! {
            control = leg.controls.recv() => match control {
                Some(Control::Kill(cause)) => {
                    hangup_leg(&inner, &leg.channel, &cause, "send_bye");
                    return;
                }
                Some(_) => {}
                None => return,
            },
            _ = sleep_opt(hangup) => {
                hangup_leg(&inner, &leg.channel, "NORMAL_CLEARING", "recv_bye");
                return;
            }
        }
    }
}

/// The `bridge` app on an A leg.
pub(crate) async fn run_bridge(
    a: &mut ALeg,
    arg: &str,
) -> Result<String, (BridgeInterrupt, String)> {
    let inner = Arc::clone(a.inner());
    let (vars, endpoints) = split_dialstring(arg);
    for (name, value) in &vars {
        a.channel().set_var(name, value);
    }
    let timeout = a
        .channel()
        .var("call_timeout")
        .or_else(|| a.channel().var("originate_timeout"))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(60.0);
    let caller = a.channel().with_data(|d| d.profile.clone());
    let mut failure = "NO_ROUTE_DESTINATION".to_owned();
    let mut won = None;
    for group in split_endpoints(endpoints, '|') {
        let list: Vec<&str> = split_endpoints(group, ',')
            .into_iter()
            .filter(|e| !e.trim().is_empty())
            .collect();
        match ring_group(&inner, &list, &caller, inner.scaled(timeout), Some(a)).await {
            Ok(found) => {
                won = Some(found);
                break;
            }
            Err(Stopped::Failed(cause)) => failure = cause,
            Err(Stopped::Cancelled(interrupt)) => {
                a.channel()
                    .set_var("originate_disposition", "ORIGINATOR_CANCEL");
                return Err((interrupt, "_none_".to_owned()));
            }
        }
    }
    let Some((mut b, device)) = won else {
        a.channel().set_var("originate_disposition", &failure);
        a.channel().set_var("originate_failed_cause", &failure);
        a.channel().set_var("bridge_hangup_cause", &failure);
        let continue_on_fail = a.channel().var("continue_on_fail").unwrap_or_default();
        let goes_on = continue_on_fail.eq_ignore_ascii_case("true")
            || continue_on_fail
                .split(',')
                .any(|c| c.trim().eq_ignore_ascii_case(&failure));
        if goes_on {
            return Ok("_none_".to_owned());
        }
        return Err((BridgeInterrupt::Kill(failure), "_none_".to_owned()));
    };
    a.answer_for_bridge();
    let now = now_us();
    let a_channel = Arc::clone(a.channel());
    a_channel.with_data(|d| {
        d.other = Some((Arc::downgrade(&b.channel), "originatee"));
        d.bridged_us = now;
    });
    b.channel.with_data(|d| {
        d.other = Some((Arc::downgrade(&a_channel), "originator"));
        d.bridged_us = now;
    });
    a.channel().set_var("originate_disposition", "SUCCESS");
    a.channel().set_var("bridge_to", b.channel.uuid());
    a.channel().set_var("last_bridge_to", b.channel.uuid());
    a.channel().set_var("bridge_channel", &b.channel.name());
    let ids = [
        ("Bridge-A-Unique-ID", a_channel.uuid()),
        ("Bridge-B-Unique-ID", b.channel.uuid()),
    ];
    a.emit_event(
        "CHANNEL_BRIDGE",
        (
            "switch_ivr_bridge.c",
            "switch_ivr_multi_threaded_bridge",
            1774,
        ),
        &ids,
    );
    a.note_bridged(device.clone());
    let bridged_at = Instant::now();
    let at = |seconds: f64| Some(bridged_at + inner.scaled(seconds));
    let device_hangup = b.hangup_after.and_then(at);
    let drop_at = b.mid_call.drop.as_ref().and_then(|(s, _)| at(*s));
    let mut press_at = b.mid_call.press.as_ref().and_then(|(s, _)| at(*s));
    let refer_at = b.mid_call.refer.as_ref().and_then(|(s, _)| at(*s));
    let call = caller.cid_num.clone();
    let acted = |inner: &Inner| {
        lock_mutex(&inner.acted).insert(device.clone());
    };
    let ended = loop {
        let caller_hangup = a.caller_hangup_at();
        tokio::select! {
            _ = sleep_opt(caller_hangup) => break Ended::Caller(BridgeInterrupt::CallerHangup),
            _ = sleep_opt(device_hangup) => break Ended::Device("NORMAL_CLEARING".to_owned(), "recv_bye"),
            _ = sleep_opt(drop_at) => {
                // The RTP timeout (or a failed session refresh) ends the device's leg and
                // FreeSWITCH sends the BYE itself.
                acted(&inner);
                let cause = b.mid_call.drop.clone().map(|(_, c)| c).unwrap_or_default();
                inner.log().push(Entry::DeviceDropped {
                    device: device.clone(),
                    call: call.clone(),
                    cause: cause.clone(),
                });
                break Ended::Device(cause, "send_bye");
            }
            _ = sleep_opt(press_at) => {
                press_at = None;
                acted(&inner);
                let digits = b.mid_call.press.clone().map(|(_, d)| d).unwrap_or_default();
                // RFC 2833 digits from the phone are dequeued on its own leg, so the DTMF
                // events carry the device leg's Unique-ID (the caller's leg only plays them).
                for digit in digits.chars() {
                    let digit = digit.to_string();
                    inner.emit(b.channel.event(
                        &inner,
                        "DTMF",
                        ("switch_channel.c", "switch_channel_dequeue_dtmf", 677),
                        false,
                        &[],
                        &[
                            ("DTMF-Digit", &digit),
                            ("DTMF-Duration", "2000"),
                            ("DTMF-Source", "RTP"),
                        ],
                    ));
                }
                inner.log().push(Entry::DevicePressed {
                    device: device.clone(),
                    call: call.clone(),
                    digits,
                });
            }
            _ = sleep_opt(refer_at) => {
                acted(&inner);
                let target = b.mid_call.refer.clone().map(|(_, t)| t).unwrap_or_default();
                inner.log().push(Entry::DeviceReferred {
                    device: device.clone(),
                    call: call.clone(),
                    to: target.clone(),
                });
                break Ended::Refer(target);
            }
            control = b.controls.recv() => match control {
                Some(Control::Kill(cause)) => break Ended::Device(cause, "send_bye"),
                Some(Control::Transfer(destination)) => {
                    if let Some((room, _)) = super::conference::transfer_room(&destination) {
                        break Ended::ToConference(room);
                    }
                }
                _ => {}
            },
            interrupt = a.next_control() => {
                if let Some(interrupt) = interrupt {
                    break Ended::Caller(interrupt);
                }
            }
        }
    };
    let unbridge = |a: &ALeg| {
        a.emit_event(
            "CHANNEL_UNBRIDGE",
            (
                "switch_ivr_bridge.c",
                "switch_ivr_multi_threaded_bridge",
                1852,
            ),
            &ids,
        );
    };
    match ended {
        Ended::ToConference(room) => {
            // uuid_transfer of the device's leg to an inline conference: it leaves the
            // bridge (the caller's bridge app returns) and lives on as a room member.
            unbridge(a);
            a.channel()
                .set_var("last_bridge_hangup_cause", "NORMAL_CLEARING");
            let BLeg {
                channel, controls, ..
            } = b;
            tokio::spawn(super::conference::member_leg(
                Arc::clone(&inner),
                channel,
                controls,
                device_hangup,
                room,
                device,
            ));
            Ok("_none_".to_owned())
        }
        Ended::Caller(interrupt) => {
            hangup_leg(&inner, &b.channel, "NORMAL_CLEARING", "send_bye");
            unbridge(a);
            Err((interrupt, "_none_".to_owned()))
        }
        Ended::Refer(target) => {
            // sofia answers the REFER with 202 and, having no Replaces, blind-transfers the
            // REFERing leg's partner (the caller) to the Refer-To user in the dialplan and
            // context of the device's profile (internal: XML, default); the transferee gets
            // sip_refer_to and sip_h_Referred-By. The phone then sends its BYE.
            let user = target.split('@').next().unwrap_or(&target).to_owned();
            a.channel()
                .set_var("sip_refer_to", &format!("<sip:{user}@127.0.0.1>"));
            a.channel()
                .set_var("sip_h_Referred-By", &format!("<sip:{device}@127.0.0.1>"));
            b.channel.set_var("endpoint_disposition", "BLIND_TRANSFER");
            unbridge(a);
            hangup_leg(&inner, &b.channel, "NORMAL_CLEARING", "recv_bye");
            Err((
                BridgeInterrupt::Transfer(format!("{user} XML default")),
                "_none_".to_owned(),
            ))
        }
        Ended::Device(cause, disposition) => {
            hangup_leg(&inner, &b.channel, &cause, disposition);
            unbridge(a);
            a.channel().set_var("last_bridge_hangup_cause", &cause);
            if a.channel()
                .var("hangup_after_bridge")
                .is_some_and(|v| v == "true")
            {
                // mod_dptools hangs the caller up with the cause of the leg that ended.
                return Err((BridgeInterrupt::Kill(cause), "_none_".to_owned()));
            }
            Ok("_none_".to_owned())
        }
    }
}

/// How a bridge ended.
enum Ended {
    /// The caller's side: hangup or uuid_kill.
    Caller(BridgeInterrupt),
    /// The device's leg hung up, with this cause and sip_hangup_disposition.
    Device(String, &'static str),
    /// The device blind-transferred the caller with a REFER to this target.
    Refer(String),
    /// The device's leg was transferred into this conference room.
    ToConference(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_split_outside_their_leg_variables() {
        let dial = "[leg_timeout=10,origination_caller_id_number=41]sofia/gateway/did1/+1514,\
                    [leg_timeout=10]user/1000@pbx|user/1001@pbx";
        let groups = split_endpoints(dial, '|');
        assert_eq!(groups.len(), 2);
        let first = split_endpoints(groups[0], ',');
        assert_eq!(
            first,
            [
                "[leg_timeout=10,origination_caller_id_number=41]sofia/gateway/did1/+1514",
                "[leg_timeout=10]user/1000@pbx"
            ]
        );
        assert_eq!(
            strip_leg_vars(first[0]),
            ("sofia/gateway/did1/+1514", Some(10.0))
        );
    }
}
