//! The API commands the simulator answers (`api` and `bgapi`), with FreeSWITCH's output texts.

use std::sync::Arc;
use std::time::Duration;

use super::calls;
use super::{lock_mutex, Inner};

/// Runs one API command; the output is what `api/response` carries.
pub(crate) async fn execute(
    inner: &Arc<Inner>,
    cmd: &str,
    args: &str,
    owner: Option<&str>,
) -> String {
    let _ = owner;
    match cmd.to_ascii_lowercase().as_str() {
        "status" => status(inner),
        "version" => "FreeSWITCH Version 1.10.12-release~64bit (-release 64bit)\n".to_owned(),
        "create_uuid" => uuid::Uuid::new_v4().to_string(),
        "reloadxml" => "+OK [Success]\n".to_owned(),
        "show" => show(inner, args),
        "sofia" => sofia(inner, args),
        "uuid_kill" => {
            let (uuid, cause) = super::inbound::split_word(args);
            let cause = if cause.is_empty() {
                "NORMAL_CLEARING"
            } else {
                cause
            };
            with_channel(inner, uuid, |c| {
                c.control(calls::Control::Kill(cause.to_owned()))
            })
        }
        "uuid_exists" => {
            let exists = lock_mutex(&inner.channels).contains_key(args.trim());
            exists.to_string()
        }
        "uuid_getvar" => {
            let (uuid, name) = super::inbound::split_word(args);
            match lock_mutex(&inner.channels).get(uuid) {
                Some(channel) => channel.var(name).unwrap_or_else(|| "_undef_".to_owned()),
                None => "-ERR No such channel!\n".to_owned(),
            }
        }
        "uuid_setvar" => {
            let (uuid, rest) = super::inbound::split_word(args);
            let (name, value) = super::inbound::split_word(rest);
            match lock_mutex(&inner.channels).get(uuid) {
                Some(channel) => {
                    channel.set_var(name, value);
                    "+OK\n".to_owned()
                }
                None => "-ERR No such channel!\n".to_owned(),
            }
        }
        "uuid_transfer" => {
            let (uuid, rest) = super::inbound::split_word(args);
            let dest = rest
                .trim_start_matches("-bleg ")
                .trim_start_matches("-both ")
                .to_owned();
            with_channel(inner, uuid, |c| {
                c.control(calls::Control::Transfer(dest.clone()))
            })
        }
        "uuid_bridge" => {
            let (a, b) = super::inbound::split_word(args);
            let channels = lock_mutex(&inner.channels);
            match (channels.get(a), channels.get(b)) {
                (Some(leg_a), Some(leg_b)) => {
                    let (leg_a, leg_b) = (Arc::clone(leg_a), Arc::clone(leg_b));
                    drop(channels);
                    calls::bridge_existing(inner, &leg_a, &leg_b);
                    format!("+OK {b}\n")
                }
                _ => "-ERR Invalid uuid\n".to_owned(),
            }
        }
        "conference" => super::conference::api(inner, args).await,
        "hupall" => {
            let cause = if args.is_empty() {
                "NORMAL_CLEARING"
            } else {
                args.trim()
            };
            let channels: Vec<_> = lock_mutex(&inner.channels).values().cloned().collect();
            for channel in channels {
                channel.control(calls::Control::Kill(cause.to_owned()));
            }
            "+OK\n".to_owned()
        }
        "originate" => match calls::originate(inner, args).await {
            Ok(uuid) => format!("+OK {uuid}\n"),
            Err(cause) => format!("-ERR {cause}\n"),
        },
        _ => format!("-ERR {cmd} Command not found!\n"),
    }
}

fn with_channel(inner: &Inner, uuid: &str, act: impl FnOnce(&calls::Channel) -> bool) -> String {
    let channel = lock_mutex(&inner.channels).get(uuid).cloned();
    match channel {
        Some(channel) if act(&channel) => "+OK\n".to_owned(),
        _ => "-ERR No such channel!\n".to_owned(),
    }
}

/// Runs a bgapi job and emits its BACKGROUND_JOB event.
pub(crate) fn spawn_bgapi(
    inner: Arc<Inner>,
    job: String,
    cmd: String,
    args: String,
    owner: Option<String>,
) {
    tokio::spawn(async move {
        let mut output = execute(&inner, &cmd, &args, owner.as_deref()).await;
        if output.is_empty() {
            output = "-ERR no reply\n".to_owned();
        }
        let mut event = inner.new_event(
            "BACKGROUND_JOB",
            None,
            ("mod_event_socket.c", "api_exec", 1572),
        );
        event.push("Job-UUID", job.as_str());
        if let Some(owner) = &owner {
            event.push("Job-Owner-UUID", owner.as_str());
        }
        event.push("Job-Command", cmd.as_str());
        if !args.is_empty() {
            event.push("Job-Command-Arg", args.as_str());
        }
        event.set_body(output.into_bytes());
        inner.emit(event);
    });
}

pub(crate) fn format_uptime(up: Duration) -> String {
    let secs = up.as_secs();
    let micros = up.subsec_micros();
    format!(
        "0 years, {} days, {} hours, {} minutes, {} seconds, {} milliseconds, {} microseconds",
        secs / 86_400,
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60,
        micros / 1000,
        micros % 1000
    )
}

fn status(inner: &Inner) -> String {
    let sessions = lock_mutex(&inner.channels).len();
    format!(
        "UP {}\nFreeSWITCH (Version 1.10.12-release  64bit) is ready\n{} session(s) since startup\n{} session(s) - peak {}, last 5min {} \n0 session(s) per Sec out of max 30, peak 0, last 5min 0 \n1000 session(s) max\nmin idle cpu 0.00/98.00\nCurrent Stack Size/Max 240K/8192K\n",
        format_uptime(inner.up_time()),
        inner.sessions_since_start.load(std::sync::atomic::Ordering::Relaxed),
        sessions,
        sessions,
        sessions
    )
}

/// `show registrations [as json]`: the core registrations table, one row per device
/// registered now. Columns as FreeSWITCH 1.10 has them (reg_user, realm, token, url,
/// expires as epoch seconds, network_ip, network_port, network_proto, hostname, metadata).
fn show_registrations(inner: &Inner, words: &[String]) -> String {
    let domain = inner.config().domain.clone();
    let hostname = inner.config().hostname.clone();
    let rows: Vec<serde_json::Value> = lock_mutex(&inner.registrations)
        .values()
        .map(|reg| {
            serde_json::json!({
                "reg_user": reg.user,
                "realm": domain,
                "token": reg.call_id,
                "url": format!("sofia/internal/sip:{}@127.0.0.1:{}", reg.user, reg.network_port),
                "expires": reg.expires_at.to_string(),
                "network_ip": "127.0.0.1",
                "network_port": reg.network_port.to_string(),
                "network_proto": "udp",
                "hostname": hostname,
                "metadata": "",
            })
        })
        .collect();
    let as_json = words.get(1).map(String::as_str) == Some("as")
        && words.get(2).map(String::as_str) == Some("json");
    if as_json {
        if rows.is_empty() {
            return "{\"row_count\":0}".to_owned();
        }
        return serde_json::json!({ "row_count": rows.len(), "rows": rows }).to_string();
    }
    let columns = [
        "reg_user",
        "realm",
        "token",
        "url",
        "expires",
        "network_ip",
        "network_port",
        "network_proto",
        "hostname",
        "metadata",
    ];
    let mut out = columns.join(",");
    out.push('\n');
    for row in &rows {
        let fields: Vec<&str> = columns
            .iter()
            .map(|column| row[*column].as_str().unwrap_or(""))
            .collect();
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out.push_str(&format!("\n{} total.\n", rows.len()));
    out
}

fn show(inner: &Inner, args: &str) -> String {
    let words: Vec<String> = args
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    let Some(what) = words.first() else {
        return "-USAGE: codec|endpoint|application|api|calls|channels|...\n".to_owned();
    };
    if what == "registrations" {
        return show_registrations(inner, &words);
    }
    if what != "channels" && what != "calls" {
        return format!("-ERR Cannot find {what}!\n");
    }
    let mut rows: Vec<serde_json::Value> = lock_mutex(&inner.channels)
        .values()
        .map(|c| c.show_row())
        .collect();
    rows.sort_by(|a, b| {
        a["created_epoch"]
            .as_str()
            .cmp(&b["created_epoch"].as_str())
    });
    let as_json = words.get(1).map(String::as_str) == Some("as")
        && words.get(2).map(String::as_str) == Some("json");
    if as_json {
        if rows.is_empty() {
            return "{\"row_count\":0}".to_owned();
        }
        let json = serde_json::json!({ "row_count": rows.len(), "rows": rows });
        return json.to_string();
    }
    let mut out = String::from(
        "uuid,direction,created,created_epoch,name,state,cid_name,cid_num,dest,callstate\n",
    );
    for row in &rows {
        let field = |k: &str| row[k].as_str().unwrap_or("").to_owned();
        out.push_str(
            &[
                field("uuid"),
                field("direction"),
                field("created"),
                field("created_epoch"),
                field("name"),
                field("state"),
                field("cid_name"),
                field("cid_num"),
                field("dest"),
                field("callstate"),
            ]
            .join(","),
        );
        out.push('\n');
    }
    out.push_str(&format!("\n{} total.\n", rows.len()));
    out
}

fn sofia(inner: &Inner, args: &str) -> String {
    let words: Vec<&str> = args.split_whitespace().collect();
    match words.as_slice() {
        ["status", "gateway", name] | ["xmlstatus", "gateway", name] => {
            let xml = words[0] == "xmlstatus";
            let gateways = lock_mutex(&inner.gateways);
            match gateways.get(*name) {
                Some(gateway) if xml => gateway.xml_status(),
                Some(gateway) => gateway.text_status(),
                None => "Invalid Gateway!\n".to_owned(),
            }
        }
        ["status"] => {
            let gateways = lock_mutex(&inner.gateways);
            let mut out = String::from("                     Name\t   Type\t                                      Data\tState\n=================================================================================================\n");
            for gateway in gateways.values() {
                out.push_str(&format!(
                    "    external::{}\tgateway\t{}\t{}\n",
                    gateway.name, gateway.proxy, gateway.state
                ));
            }
            out.push_str("=================================================================================================\n");
            out
        }
        [_, "rescan"] | ["profile", _, "rescan"] => {
            "Reload XML [Success]\n+OK scan complete\n".to_owned()
        }
        ["profile", _, "killgw", name] => {
            if super::sofia::kill_gateway(inner, name) {
                "+OK gateway marked for deletion.\n".to_owned()
            } else {
                "-ERR no such gateway.\n".to_owned()
            }
        }
        _ => "-ERR Usage: sofia status|xmlstatus gateway <name>\n".to_owned(),
    }
}
