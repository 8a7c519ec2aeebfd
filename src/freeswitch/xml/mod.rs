//! mod_xml_curl: the HTTP endpoint FreeSWITCH asks for its directory, sofia.conf and dialplan,
//! and the XML documents it answers with.
//!
//! Neighbours: [`crate::settings`] supplies everything the documents say; FreeSWITCH (or the
//! simulator) is the only client. Invariant: every answer is a well-formed document built by
//! the serializer, and any failure answers "not found" so FreeSWITCH falls back cleanly.

pub mod document;
pub mod endpoint;
pub mod form;

pub use endpoint::{router, serve, XmlState};

use std::net::SocketAddr;

/// What can go wrong building documents or starting the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The serializer refused a document (a bug, not user input: every value is a string).
    #[error("xml endpoint: could not render a document: {0}")]
    Render(#[source] quick_xml::SeError),
    /// Listening on a non-loopback address without Basic auth credentials.
    #[error("freeswitch.xml.listen: {0} is reachable from other machines, but freeswitch.xml has no username/password (set both, or listen on 127.0.0.1)")]
    PublicWithoutCredentials(SocketAddr),
    /// The listen address could not be bound.
    #[error("freeswitch.xml.listen: cannot listen on {address}: {source} (is another program using the port?)")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The server stopped on an I/O error.
    #[error("xml endpoint on {address}: {source}")]
    Serve {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}
