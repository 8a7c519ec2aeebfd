//! mod_xml_curl endpoint (to be written).
