//! mod_xml_curl document (to be written).
