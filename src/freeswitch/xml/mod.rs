//! mod_xml_curl: the HTTP endpoint and the XML documents it answers with.

pub mod document;
pub mod endpoint;
