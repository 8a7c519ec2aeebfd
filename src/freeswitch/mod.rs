//! The FreeSWITCH wire: ESL (inbound client, outbound server) and mod_xml_curl documents.
//! Only this module knows the wire; everything it hands out is a plain type.

pub mod esl;
pub mod xml;
