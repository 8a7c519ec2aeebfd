//! One-pass header scanners for event bodies on the inbound hot path.
//!
//! A channel event carries about 150 headers and patchbay keeps about 15 of them; the
//! inbound link sees every channel event of the switch. So instead of decoding a whole
//! event into a view first ([`super::event::PlainView`], [`super::event::JsonView`]), these
//! scanners walk the body once and hand out each header's name as raw bytes and its value
//! as a [`RawValue`] that is only decoded when the caller keeps it.
//!
//! They understand exactly the shapes FreeSWITCH writes (`Name: url-encoded` lines; a flat
//! JSON object of strings and arrays of strings). Anything else is [`Unsupported`], and the
//! caller falls back to the full views, which either decode it or say what is wrong. The
//! structure is always checked to the end, so a truncated event is never taken for whole;
//! only the text of values nobody reads is not checked.

use std::borrow::Cow;
use std::ops::ControlFlow;

use super::frame::url_decode_raw;

/// The body is not in the shape these scanners read; use the full views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsupported;

/// A header value as it sits in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawValue<'a> {
    /// URL-encoded text of a plain event.
    Url(&'a [u8]),
    /// A JSON string without its quotes; `escaped` when it holds a backslash escape.
    JsonString { inner: &'a [u8], escaped: bool },
    /// A JSON array of strings, brackets included (FreeSWITCH's multi-valued headers).
    JsonArray(&'a [u8]),
}

impl<'a> RawValue<'a> {
    /// The value as text, as the full views would give it; invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self) -> Cow<'a, str> {
        match *self {
            RawValue::Url(bytes) => match url_decode_raw(bytes) {
                Cow::Borrowed(bytes) => String::from_utf8_lossy(bytes),
                Cow::Owned(bytes) => Cow::Owned(
                    String::from_utf8(bytes)
                        .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into()),
                ),
            },
            RawValue::JsonString {
                inner,
                escaped: false,
            } => String::from_utf8_lossy(inner),
            RawValue::JsonString {
                inner,
                escaped: true,
            } => {
                // The quotes sit right around `inner` in the body, but rebuilding them costs
                // one small copy only for the rare escaped value.
                let mut quoted = Vec::with_capacity(inner.len() + 2);
                quoted.push(b'"');
                quoted.extend_from_slice(inner);
                quoted.push(b'"');
                serde_json::from_slice::<String>(&quoted)
                    .map(Cow::Owned)
                    .unwrap_or_else(|_| Cow::Owned(String::from_utf8_lossy(inner).into_owned()))
            }
            RawValue::JsonArray(array) => {
                let items: Vec<String> = serde_json::from_slice(array).unwrap_or_default();
                Cow::Owned(format!("ARRAY::{}", items.join("|:")))
            }
        }
    }
}

/// The offsets of every byte equal to `a` or `b`, in order.
///
/// In ESL bodies the matches are dense (a colon and a line end every 35 bytes or so), where
/// `memchr2_iter` restarts its vector search after every hit and spends more on set-up than
/// on scanning. Here each 64-byte block is turned into one bit mask of its matches (the
/// simdjson way), then the set bits are read off.
struct Positions2<'a> {
    body: &'a [u8],
    a: u8,
    b: u8,
    /// Offset of the block `mask` came from.
    block_at: usize,
    /// One bit per matching byte of the current block still to report.
    mask: u64,
}

impl<'a> Positions2<'a> {
    fn new(body: &'a [u8], a: u8, b: u8) -> Self {
        let mut positions = Positions2 {
            body,
            a,
            b,
            block_at: 0,
            mask: 0,
        };
        positions.mask = positions.block_mask(0);
        positions
    }

    /// Bit `i` set when byte `at + i` equals a needle.
    fn block_mask(&self, at: usize) -> u64 {
        match self.body.get(at..at + 64) {
            Some(block) => block_matches(block.try_into().expect("64 bytes"), self.a, self.b),
            None => {
                let rest = self.body.get(at..).unwrap_or_default();
                let mut block = [0u8; 64];
                block[..rest.len()].copy_from_slice(rest);
                // The padding must never match, even when a needle is a zero byte.
                let valid = u64::MAX.checked_shr(64 - rest.len() as u32).unwrap_or(0);
                block_matches(&block, self.a, self.b) & valid
            }
        }
    }
}

impl Iterator for Positions2<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            self.block_at += 64;
            if self.block_at >= self.body.len() {
                return None;
            }
            self.mask = self.block_mask(self.block_at);
        }
        let offset = self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(self.block_at + offset)
    }
}

/// Bit `i` set when `block[i]` is `a` or `b`: SSE2, which every x86-64 has.
#[cfg(target_arch = "x86_64")]
fn block_matches(block: &[u8; 64], a: u8, b: u8) -> u64 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of the x86-64 baseline, so these instructions exist on every
    // machine this code is built for; each load reads 16 bytes inside `block` (the chunks are
    // exactly 16 bytes) and `loadu` has no alignment requirement.
    unsafe {
        let (needle_a, needle_b) = (_mm_set1_epi8(a as i8), _mm_set1_epi8(b as i8));
        let mut mask = 0u64;
        for (index, chunk) in block.chunks_exact(16).enumerate() {
            let bytes = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
            let hits = _mm_or_si128(
                _mm_cmpeq_epi8(bytes, needle_a),
                _mm_cmpeq_epi8(bytes, needle_b),
            );
            mask |= u64::from(_mm_movemask_epi8(hits) as u16) << (16 * index);
        }
        mask
    }
}

/// Bit `i` set when `block[i]` is `a` or `b`: eight bytes at a time with the exact
/// zero-byte test, for machines without SSE2.
#[cfg(not(target_arch = "x86_64"))]
fn block_matches(block: &[u8; 64], a: u8, b: u8) -> u64 {
    const LOW_SEVEN: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    fn zero_bytes(x: u64) -> u64 {
        !(((x & LOW_SEVEN) + LOW_SEVEN) | x | LOW_SEVEN)
    }
    let (needle_a, needle_b) = (u64::from_ne_bytes([a; 8]), u64::from_ne_bytes([b; 8]));
    let mut mask = 0u64;
    for (index, chunk) in block.chunks_exact(8).enumerate() {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let high_bits = zero_bytes(word ^ needle_a) | zero_bytes(word ^ needle_b);
        // Gather the eight high bits into the low byte.
        let packed = ((high_bits >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56;
        mask |= packed << (8 * index);
    }
    mask
}

/// Walk the `Name: value` lines of a `text/event-plain` body up to the empty line.
pub fn scan_plain<'a>(
    body: &'a [u8],
    mut visit: impl FnMut(&'a [u8], RawValue<'a>) -> ControlFlow<()>,
) -> Result<(), Unsupported> {
    // One sweep finds every colon and line end: per-line searches would pay their set-up
    // cost some 150 times per event. Values are URL-encoded, so a colon past the name's is rare.
    let mut line_start = 0;
    let mut colon = None;
    for at in Positions2::new(body, b':', b'\n') {
        if body[at] == b':' {
            colon.get_or_insert(at);
            continue;
        }
        let line = &body[line_start..at];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Ok(());
        }
        let colon_at = colon.take().ok_or(Unsupported)?;
        let value = &body[colon_at + 1..line_start + line.len()];
        let value = value.strip_prefix(b" ").unwrap_or(value);
        let name = &body[line_start..colon_at];
        line_start = at + 1;
        if visit(name, RawValue::Url(value)).is_break() {
            return Ok(());
        }
    }
    // FreeSWITCH always ends the header block with an empty line.
    Err(Unsupported)
}

/// Walk the members of a `text/event-json` body: one flat object whose values are strings
/// or arrays of strings. Keys holding escapes are [`Unsupported`] (FreeSWITCH never writes
/// them).
pub fn scan_json<'a, F>(body: &'a [u8], visit: F) -> Result<(), Unsupported>
where
    F: FnMut(&'a [u8], RawValue<'a>) -> ControlFlow<()>,
{
    let mut scanner = JsonScanner {
        body,
        expect: Expect::Open,
        key: &[],
        array_start: 0,
        stopped: false,
        visit,
    };
    // One sweep finds every quote and backslash; the few bytes between two strings are
    // the structure (`{`, `:`, `,`, `[`, `]`, `}`), checked by a small state machine. Per-string
    // searches would pay their set-up cost some 300 times per event.
    let mut gap_start = 0;
    let mut string_start = None;
    let mut escaped = false;
    let mut skip_to = 0;
    for at in Positions2::new(body, b'"', b'\\') {
        if at < skip_to {
            continue;
        }
        match (body[at], string_start) {
            (b'\\', Some(_)) => {
                escaped = true;
                // Whatever follows the backslash belongs to the escape, a quote included.
                skip_to = at + 2;
            }
            (b'"', Some(start)) => {
                scanner.string(&body[start..at], escaped)?;
                string_start = None;
                gap_start = at + 1;
            }
            (b'"', None) => {
                scanner.gap(gap_start, at)?;
                scanner.expect = match scanner.expect {
                    Expect::KeyOrEnd | Expect::Key => Expect::Key,
                    Expect::Value => Expect::Value,
                    Expect::ItemOrEnd | Expect::Item => Expect::Item,
                    _ => return Err(Unsupported),
                };
                string_start = Some(at + 1);
                escaped = false;
            }
            _ => return Err(Unsupported),
        }
    }
    if string_start.is_some() {
        return Err(Unsupported);
    }
    scanner.gap(gap_start, body.len())?;
    match scanner.expect {
        Expect::Done => Ok(()),
        _ => Err(Unsupported),
    }
}

/// What may come next in a [`scan_json`] body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Open,
    KeyOrEnd,
    Key,
    Colon,
    Value,
    ItemOrEnd,
    Item,
    CommaOrArrayEnd,
    CommaOrEnd,
    Done,
}

struct JsonScanner<'a, F> {
    body: &'a [u8],
    expect: Expect,
    key: &'a [u8],
    array_start: usize,
    /// The visitor asked to stop; the rest is still walked, so a truncated body never passes.
    stopped: bool,
    visit: F,
}

impl<'a, F> JsonScanner<'a, F>
where
    F: FnMut(&'a [u8], RawValue<'a>) -> ControlFlow<()>,
{
    fn emit(&mut self, value: RawValue<'a>) {
        if !self.stopped && (self.visit)(self.key, value).is_break() {
            self.stopped = true;
        }
    }

    /// A string just ended; `inner` is its text without quotes.
    fn string(&mut self, inner: &'a [u8], escaped: bool) -> Result<(), Unsupported> {
        self.expect = match self.expect {
            Expect::Key if escaped => return Err(Unsupported),
            Expect::Key => {
                self.key = inner;
                Expect::Colon
            }
            Expect::Value => {
                self.emit(RawValue::JsonString { inner, escaped });
                Expect::CommaOrEnd
            }
            Expect::Item => Expect::CommaOrArrayEnd,
            _ => return Err(Unsupported),
        };
        Ok(())
    }

    /// The structure between two strings, `body[from..to]`.
    fn gap(&mut self, from: usize, to: usize) -> Result<(), Unsupported> {
        for at in from..to {
            let byte = self.body[at];
            self.expect = match (self.expect, byte) {
                (_, b' ' | b'\n' | b'\r' | b'\t') => continue,
                (Expect::Open, b'{') => Expect::KeyOrEnd,
                (Expect::KeyOrEnd | Expect::CommaOrEnd, b'}') => Expect::Done,
                (Expect::Colon, b':') => Expect::Value,
                (Expect::Value, b'[') => {
                    self.array_start = at;
                    Expect::ItemOrEnd
                }
                (Expect::ItemOrEnd | Expect::CommaOrArrayEnd, b']') => {
                    let array = &self.body[self.array_start..=at];
                    self.emit(RawValue::JsonArray(array));
                    Expect::CommaOrEnd
                }
                (Expect::CommaOrArrayEnd, b',') => Expect::Item,
                (Expect::CommaOrEnd, b',') => Expect::Key,
                _ => return Err(Unsupported),
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect_json(body: &[u8]) -> Result<Vec<(String, String)>, Unsupported> {
        let mut out = Vec::new();
        scan_json(body, |name, value| {
            out.push((
                String::from_utf8_lossy(name).into_owned(),
                value.decode().into_owned(),
            ));
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    #[test]
    fn positions_match_a_plain_search_at_every_alignment() {
        let mut text = b"a:b\nc\"d\\e:\n\n::xyz\"".repeat(7);
        text.extend_from_slice(b"::");
        for start in 0..text.len() {
            for end in start..=text.len() {
                let slice = &text[start..end];
                let expected: Vec<usize> = (0..slice.len())
                    .filter(|&i| slice[i] == b':' || slice[i] == b'\n')
                    .collect();
                assert_eq!(
                    Positions2::new(slice, b':', b'\n').collect::<Vec<_>>(),
                    expected
                );
            }
        }
        // Bytes that differ from a needle only in the high bit must not match, nor padding.
        let tricky = [
            b':' | 0x80,
            b'\n' | 0x80,
            0xff,
            0x00,
            b':',
            0x80,
            0x0a,
            0x3a,
            0xba,
        ];
        assert_eq!(
            Positions2::new(&tricky, 0, b':').collect::<Vec<_>>(),
            vec![3, 4, 7]
        );
        let expected: Vec<usize> = (0..tricky.len())
            .filter(|&i| tricky[i] == b':' || tricky[i] == b'\n')
            .collect();
        assert_eq!(
            Positions2::new(&tricky, b':', b'\n').collect::<Vec<_>>(),
            expected
        );
    }

    #[test]
    fn json_values_decode_as_the_full_view_does() {
        let body = br#" { "Event-Name" : "CHANNEL_ANSWER", "Caller-Caller-ID-Name":"Marie \"M\" <D\u00e9>\\","variable_originate_causes":["a;NONE", "b;LOSE_RACE"],"empty":[] } "#;
        let fields = collect_json(body).unwrap();
        assert_eq!(
            fields,
            vec![
                ("Event-Name".into(), "CHANNEL_ANSWER".into()),
                ("Caller-Caller-ID-Name".into(), "Marie \"M\" <Dé>\\".into()),
                (
                    "variable_originate_causes".into(),
                    "ARRAY::a;NONE|:b;LOSE_RACE".into()
                ),
                ("empty".into(), "ARRAY::".into()),
            ]
        );
    }

    #[test]
    fn json_shapes_freeswitch_never_writes_are_unsupported() {
        for body in [
            &br#"{"a":"b""#[..],
            br#"{"a":"b"} trailing"#,
            br#"{"a":1}"#,
            br#"{"a":{"b":"c"}}"#,
            br#"{"a\"b":"c"}"#,
            br#"{"a":"b\"#,
            br#"{"a":"b",}"#,
            br#"["a"]"#,
            b"",
        ] {
            assert_eq!(
                collect_json(body),
                Err(Unsupported),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(collect_json(b"{}"), Ok(vec![]));
    }

    #[test]
    fn a_stop_still_checks_the_rest_of_the_object() {
        let mut seen = 0;
        let whole = scan_json(br#"{"a":"1","b":"2"}"#, |_, _| {
            seen += 1;
            ControlFlow::Break(())
        });
        assert_eq!((whole, seen), (Ok(()), 1));
        assert_eq!(
            scan_json(br#"{"a":"1","b":"2""#, |_, _| ControlFlow::Break(())),
            Err(Unsupported)
        );
    }

    #[test]
    fn plain_lines_decode_on_demand_and_stop_at_the_empty_line() {
        let body = b"Event-Name: CHANNEL_ANSWER\r\nCaller-Caller-ID-Name: Marie%20%3CD%C3%A9%3E\nBad%ZZ: 100%\n\nbody: not a header\n";
        let mut fields = Vec::new();
        scan_plain(body, |name, value| {
            fields.push((
                String::from_utf8_lossy(name).into_owned(),
                value.decode().into_owned(),
            ));
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(
            fields,
            vec![
                ("Event-Name".to_owned(), "CHANNEL_ANSWER".to_owned()),
                ("Caller-Caller-ID-Name".to_owned(), "Marie <Dé>".to_owned()),
                ("Bad%ZZ".to_owned(), "100%".to_owned()),
            ]
        );
        assert_eq!(
            scan_plain(
                b"Event-Name: X\nno colon\n\n",
                |_, _| ControlFlow::Continue(())
            ),
            Err(Unsupported)
        );
        assert_eq!(
            scan_plain(b"Event-Name: X\n", |_, _| ControlFlow::Continue(())),
            Err(Unsupported)
        );
    }
}
