//! A FreeSWITCH simulator that speaks ESL and mod_xml_curl as FreeSWITCH 1.10.12 does.
