//! mod_conference, as far as patchbay uses it: rooms that channels join with the `conference`
//! app or with `uuid_transfer <uuid> conference:<room>@<profile> inline`, the
//! `conference <room> dial <endpoint>` API that originates a new member, and the `mintwo`
//! member flag (once such a member is in, the conference ends when fewer than two members
//! remain, kicking the last one). Who joined which room and when each left goes to the log.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::bridge::{hangup_leg, BLeg, DialOutcome};
use super::calls::{Channel, Control};
use super::log::Entry;
use super::{lock_mutex, Inner};

/// The rooms with at least one member, by name.
#[derive(Default)]
pub(crate) struct Rooms {
    rooms: HashMap<String, Room>,
}

#[derive(Default)]
struct Room {
    members: Vec<Member>,
    /// A member joined with `mintwo`: the room ends below two members.
    mintwo: bool,
}

struct Member {
    uuid: String,
    /// Wakes the member's task when the conference ends.
    kicked: Arc<Notify>,
}

/// The room and flags of `<room>[@profile][+flags{a|b}]`.
pub(crate) fn parse_room(spec: &str) -> (String, bool) {
    let (name_part, flags) = match spec.split_once("+flags{") {
        Some((name, flags)) => (name, flags.trim_end_matches('}')),
        None => (spec, ""),
    };
    let room = name_part.split('@').next().unwrap_or(name_part).trim();
    let mintwo = flags.split('|').any(|flag| flag.trim() == "mintwo");
    (room.to_owned(), mintwo)
}

/// The room of a transfer destination `conference:<room>@<profile>[+flags{..}] inline`.
pub(crate) fn transfer_room(destination: &str) -> Option<(String, bool)> {
    let mut words = destination.split_whitespace();
    let target = words.next()?;
    let dialplan = words.next().unwrap_or("");
    let spec = target.strip_prefix("conference:")?;
    (dialplan == "inline").then(|| parse_room(spec))
}

/// Adds a member; the returned notify fires when the conference ends.
pub(crate) fn join(inner: &Inner, room: &str, uuid: &str, name: &str, mintwo: bool) -> Arc<Notify> {
    let kicked = Arc::new(Notify::new());
    {
        let mut rooms = lock_mutex(&inner.conferences);
        let entry = rooms.rooms.entry(room.to_owned()).or_default();
        entry.mintwo |= mintwo;
        entry.members.push(Member {
            uuid: uuid.to_owned(),
            kicked: Arc::clone(&kicked),
        });
    }
    inner.log().push(Entry::ConferenceJoined {
        room: room.to_owned(),
        member: name.to_owned(),
        at: std::time::Instant::now(),
    });
    kicked
}

/// Removes a member; a `mintwo` room left with fewer than two ends (its last member is
/// kicked).
pub(crate) fn leave(inner: &Inner, room: &str, uuid: &str, name: &str) {
    {
        let mut rooms = lock_mutex(&inner.conferences);
        if let Some(entry) = rooms.rooms.get_mut(room) {
            entry.members.retain(|member| member.uuid != uuid);
            if entry.mintwo && entry.members.len() < 2 {
                for member in &entry.members {
                    member.kicked.notify_one();
                }
            }
            if entry.members.is_empty() {
                rooms.rooms.remove(room);
            }
        }
    }
    inner.log().push(Entry::ConferenceLeft {
        room: room.to_owned(),
        member: name.to_owned(),
        at: std::time::Instant::now(),
    });
}

/// A leg that is only a conference member: it stays until its device hangs up, it is
/// killed, or the conference ends (then FreeSWITCH hangs it up).
pub(crate) async fn member_leg(
    inner: Arc<Inner>,
    channel: Arc<Channel>,
    mut controls: mpsc::UnboundedReceiver<Control>,
    hangup_at: Option<Instant>,
    room: String,
    name: String,
) {
    let kicked = join(&inner, &room, channel.uuid(), &name, false);
    let (cause, disposition) = loop {
        tokio::select! {
            _ = kicked.notified() => break ("NORMAL_CLEARING".to_owned(), "send_bye"),
            _ = sleep_opt(hangup_at) => break ("NORMAL_CLEARING".to_owned(), "recv_bye"),
            control = controls.recv() => match control {
                Some(Control::Kill(cause)) => break (cause, "send_bye"),
                Some(_) => {}
                None => break ("NORMAL_CLEARING".to_owned(), "send_bye"),
            },
        }
    };
    leave(&inner, &room, channel.uuid(), &name);
    hangup_leg(&inner, &channel, &cause, disposition);
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The `conference` API: `<room> dial <endpoint> [cid_num] [cid_name]` (others unknown here).
pub(crate) async fn api(inner: &Arc<Inner>, args: &str) -> String {
    let mut words = args.split_whitespace();
    let (Some(room), Some(sub)) = (words.next(), words.next()) else {
        return "-ERR Usage: conference <room> dial <endpoint>\n".to_owned();
    };
    match sub {
        "dial" => {
            let Some(endpoint) = words.next() else {
                return "-ERR Usage: conference <room> dial <endpoint>\n".to_owned();
            };
            match super::bridge::dial(inner, endpoint).await {
                DialOutcome::Answered(leg) => {
                    let BLeg {
                        channel,
                        controls,
                        hangup_after,
                        device,
                        ..
                    } = leg;
                    let hangup_at = hangup_after.map(|s| Instant::now() + inner.scaled(s));
                    tokio::spawn(member_leg(
                        Arc::clone(inner),
                        channel,
                        controls,
                        hangup_at,
                        room.to_owned(),
                        device,
                    ));
                    "Call Requested: result: [SUCCESS]\n".to_owned()
                }
                DialOutcome::Failed(cause) => format!("Call Requested: result: [{cause}]\n"),
            }
        }
        "list" => {
            let rooms = lock_mutex(&inner.conferences);
            match rooms.rooms.get(room) {
                Some(entry) => entry
                    .members
                    .iter()
                    .enumerate()
                    .map(|(index, member)| format!("{};{}\n", index + 1, member.uuid))
                    .collect(),
                None => format!("-ERR Conference {room} not found\n"),
            }
        }
        _ => format!("-ERR Conference {room} not found\n"),
    }
}
