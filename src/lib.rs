//! patchbay: the brain of one person's phone system.
//!
//! FreeSWITCH does SIP and media; patchbay decides. The modules follow the data flow:
//! - [`settings`]: the settings file (secrets, servers), validated with clear errors;
//! - [`repo`]: the person's phone repo (git), loaded one commit at a time into a snapshot;
//! - [`contacts`]: vCard parsing and the phone-number index;
//! - [`rules`]: AwesomeWM-style rule matching in Rhai; turns a [`calls::Call`] into a decision;
//! - [`freeswitch`]: the wire: ESL (inbound and outbound) and mod_xml_curl documents;
//! - [`calls`]: the call model, registry and call flows;
//! - [`voicemail`], [`notify`], [`calendar`], [`spool`]: what happens after a call;
//! - [`journal`]: the readable log for the person;
//! - [`sim`]: a protocol-faithful FreeSWITCH simulator for tests, benchmarks and `demo`.

pub mod calendar;
pub mod calls;
pub mod cli;
pub mod contacts;
pub mod daemon;
pub mod freeswitch;
pub mod journal;
pub mod notify;
pub mod repo;
pub mod rules;
pub mod settings;
pub mod sim;
pub mod spool;
pub mod voicemail;
