//! Fuzzes the ESL frame decoder: arbitrary bytes, read as FreeSWITCH frames and as client
//! commands, must never panic, never claim more bytes than given, and the URL codec must
//! round-trip whatever the lossy-% rule allows.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/freeswitch/esl/frame.rs"]
#[allow(dead_code)]
mod frame;

use frame::{Frame, Pending};

fn drain(mut buf: &[u8], commands: bool) {
    loop {
        let parsed = if commands { Frame::parse_command(buf) } else { Frame::parse(buf) };
        match parsed {
            Ok(Some((frame, used))) => {
                assert!(used > 0 && used <= buf.len(), "used {used} of {}", buf.len());
                // A frame re-encoded from its own headers must decode again.
                let wire = frame.to_wire();
                let again = if commands { Frame::parse_command(&wire) } else { Frame::parse(&wire) };
                assert!(again.is_ok(), "re-encoded frame no longer decodes: {again:?}");
                buf = &buf[used..];
            }
            Ok(None) => {
                assert!(!matches!(Frame::pending(buf), Ok(Pending::Complete(_))));
                return;
            }
            Err(_) => return,
        }
    }
}

fn has_percent_hex(s: &str) -> bool {
    s.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

fuzz_target!(|data: &[u8]| {
    drain(data, false);
    drain(data, true);
    if let Ok(text) = std::str::from_utf8(data) {
        let encoded = frame::url_encode(text);
        let decoded = frame::url_decode(&encoded);
        if !has_percent_hex(text) {
            assert_eq!(decoded, text);
        }
        let _ = frame::url_decode(text);
        let mut out = Vec::new();
        frame::write_event_plain(&mut out, [("Name", text)], Some(data));
        let (outer, used) = Frame::parse(&out).unwrap().unwrap();
        assert_eq!(used, out.len());
        let (inner, _) = Frame::parse(outer.body().unwrap()).unwrap().unwrap();
        assert_eq!(inner.body(), Some(data));
        let mut json = Vec::new();
        frame::write_event_json(&mut json, [("Name", text)], None);
        assert!(Frame::parse(&json).unwrap().is_some());
    }
});
