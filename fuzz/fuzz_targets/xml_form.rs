//! Fuzzes the mod_xml_curl form parser with arbitrary POST bodies: it must return a request or
//! an error, never panic, and whatever it returns must come from the body.
//!
//!     cargo fuzz run xml_form -- -max_total_time=600
//!
//! Seed the corpus with the captured POST bodies (benches/xml_curl/register-1000.body).
#![no_main]

use libfuzzer_sys::fuzz_target;
use patchbay::freeswitch::xml::form;

fuzz_target!(|body: &[u8]| {
    if let Ok(request) = form::parse(body) {
        // The fixed fields are borrowed unchanged from the body.
        for field in [
            request.hostname,
            request.section,
            request.tag_name,
            request.key_name,
            request.key_value,
        ] {
            assert!(
                field.is_empty()
                    || body
                        .windows(field.len())
                        .any(|window| window == field.as_bytes())
            );
        }
        // A decoded value is never longer than its encoded form.
        let decoded = [
            &request.action,
            &request.user,
            &request.domain,
            &request.hunt_context,
        ];
        for value in decoded.into_iter().flatten() {
            assert!(value.len() <= body.len());
        }
    }
});
