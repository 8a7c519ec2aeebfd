//! ESL framing without I/O: splitting a byte buffer into frames, FreeSWITCH's URL codec and the
//! encoders for every frame shape FreeSWITCH sends.
//!
//! A frame is a block of `Name: value` lines ended by an empty line, followed by exactly
//! `Content-Length` bytes of body when that header is present. Commands from a client have the
//! same shape except that their first line is the command itself (`api status`), so they are
//! read with [`Frame::parse_command`]. The simulator reads commands and writes frames with this
//! module; the inbound and outbound clients live next door and only share the URL codec.
//!
//! Invariant: decoding never allocates before a whole frame is buffered ([`Frame::check`]), never
//! reads past the limits (10 MB of headers, 16 MiB of body) and never panics on any input; an
//! incomplete frame is `Ok(None)`, not an error.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Most bytes a header block may take, as in FreeSWITCH's mod_event_socket.
pub const MAX_HEADER_BYTES: usize = 10 * 1000 * 1000;
/// Most bytes a body may take.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The body of the final disconnect notice FreeSWITCH sends before closing a socket.
pub const GOODBYE: &[u8] = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";
/// The body of the notice sent when a listener lost too many events.
pub const KILLED_LOST_EVENTS: &[u8] = b"killed listener because of lost events\n";

/// A framing error: the bytes can never become a valid frame, so the connection should be dropped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("esl frame: header block exceeds {MAX_HEADER_BYTES} bytes without an empty line (expected `Name: value` lines ended by a blank line)")]
    HeadersTooLarge,
    #[error("esl frame: Content-Length {0} exceeds the {MAX_BODY_BYTES}-byte body limit")]
    BodyTooLarge(usize),
    #[error("esl frame: Content-Length {value:?} is not a byte count (expected a decimal number)")]
    BadContentLength { value: String },
    #[error("esl frame: line {line} is not valid UTF-8 (header lines must be text)")]
    InvalidUtf8 { line: usize },
    #[error("esl frame: line {line} {text:?} has no ':' (expected `Name: value`)")]
    MissingColon { line: usize, text: String },
}

/// One ESL message: ordered headers with their values as on the wire, and an optional body.
///
/// Values are not URL-decoded here (FreeSWITCH never decodes client input, and only event
/// bodies and the outbound connect reply carry encoded values); see [`url_decode`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frame {
    /// The first line of a client command (`sendmsg <uuid>`), if this frame is one.
    command: Option<String>,
    /// `(name, value)` pairs in wire order; names keep their case.
    headers: Vec<(String, String)>,
    /// Exactly `Content-Length` bytes, when that header was present.
    body: Option<Vec<u8>>,
}

/// Where a complete frame starts and ends inside a buffer, found by [`Frame::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Offset of the first header line (leading blank lines skipped).
    start: usize,
    /// Offset just past the empty line that ends the header block.
    headers_end: usize,
    /// Length of the body that follows the header block.
    body_len: usize,
}

/// What [`Frame::pending`] found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// A whole frame is buffered.
    Complete(Extent),
    /// The header block is not complete yet.
    Headers,
    /// The header block is complete; the frame needs this many bytes in total.
    Bytes(usize),
}

impl Extent {
    /// Total bytes the frame takes in the buffer, leading blank lines included.
    pub fn len(&self) -> usize {
        self.headers_end + self.body_len
    }

    /// Whether the frame takes no bytes (never true for a checked frame).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The header block inside the buffer this extent was checked in, empty line included.
    pub fn header_block<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start..self.headers_end]
    }

    /// The body inside the buffer this extent was checked in.
    pub fn body<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.headers_end..self.len()]
    }

    /// The `Content-Type` value of a checked frame, read in place: the hot path of the
    /// inbound link looks at nothing else before handing an event body on.
    pub fn content_type<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        self.header_block(buf)
            .split(|&b| b == b'\n')
            .find_map(|line| strip_name(trim_cr(line), b"content-type"))
    }
}

impl Frame {
    /// An empty frame to add headers to.
    pub fn new() -> Self {
        Self::default()
    }

    /// A command frame whose first line is `command`.
    pub fn command_line(command: impl Into<String>) -> Self {
        Self {
            command: Some(command.into()),
            ..Self::default()
        }
    }

    /// Adds a header at the end.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds a header at the end.
    pub fn push_header(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.headers.push((name.into(), value.into()));
    }

    /// Sets the body and appends its `Content-Length` header (in bytes).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        self.headers
            .push(("Content-Length".into(), body.len().to_string()));
        self.body = Some(body);
        self
    }

    /// The command line of a client command.
    pub fn command(&self) -> Option<&str> {
        self.command.as_deref()
    }

    /// The headers in wire order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first value of a header; names match case-insensitively, as in FreeSWITCH.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Content-Type` header.
    pub fn content_type(&self) -> Option<&str> {
        self.header("Content-Type")
    }

    /// The body bytes, if any.
    pub fn body(&self) -> Option<&[u8]> {
        self.body.as_deref()
    }

    /// Takes the body out of the frame.
    pub fn into_body(self) -> Option<Vec<u8>> {
        self.body
    }

    /// Finds a complete frame at the start of `buf`; `Ok(None)` means more bytes are needed.
    /// Leading blank lines are skipped, `\n` and `\r\n` both end a line.
    pub fn check(buf: &[u8]) -> Result<Option<Extent>, Error> {
        match Self::pending(buf)? {
            Pending::Complete(extent) => Ok(Some(extent)),
            Pending::Headers | Pending::Bytes(_) => Ok(None),
        }
    }

    /// Like [`Frame::check`], but says how many bytes a frame whose header block is complete
    /// needs in total, so a reader can wait for its body without scanning the headers again.
    pub fn pending(buf: &[u8]) -> Result<Pending, Error> {
        let mut start = 0;
        // Blank lines before a frame are skipped, as FreeSWITCH does before a command.
        loop {
            match buf.get(start) {
                Some(b'\n') => start += 1,
                Some(b'\r') if buf.get(start + 1) == Some(&b'\n') => start += 2,
                Some(b'\r') if start + 1 == buf.len() => return Ok(Pending::Headers),
                None if start > MAX_HEADER_BYTES => return Err(Error::HeadersTooLarge),
                None => return Ok(Pending::Headers),
                Some(_) => break,
            }
        }
        let mut line_start = start;
        let mut content_length: Option<usize> = None;
        loop {
            let Some(rel) = buf[line_start..].iter().position(|&b| b == b'\n') else {
                if buf.len() - start > MAX_HEADER_BYTES {
                    return Err(Error::HeadersTooLarge);
                }
                return Ok(Pending::Headers);
            };
            let line_end = line_start + rel;
            if line_end - start > MAX_HEADER_BYTES {
                return Err(Error::HeadersTooLarge);
            }
            let line = trim_cr(&buf[line_start..line_end]);
            if line.is_empty() {
                let headers_end = line_end + 1;
                let body_len = content_length.unwrap_or(0);
                if buf.len() - headers_end < body_len {
                    return Ok(Pending::Bytes(headers_end + body_len));
                }
                return Ok(Pending::Complete(Extent {
                    start,
                    headers_end,
                    body_len,
                }));
            }
            if let Some(value) = strip_name(line, b"content-length") {
                content_length = Some(parse_content_length(value)?);
            }
            line_start = line_end + 1;
        }
    }

    /// Decodes one frame sent by FreeSWITCH (every line a header) from the start of `buf`,
    /// returning it with the number of bytes it took; `Ok(None)` means more bytes are needed.
    pub fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, Error> {
        Self::parse_inner(buf, false)
    }

    /// Decodes one client command (first line the command, then headers, then an optional body).
    pub fn parse_command(buf: &[u8]) -> Result<Option<(Frame, usize)>, Error> {
        Self::parse_inner(buf, true)
    }

    fn parse_inner(buf: &[u8], is_command: bool) -> Result<Option<(Frame, usize)>, Error> {
        let Some(extent) = Self::check(buf)? else {
            return Ok(None);
        };
        let block = &buf[extent.start..extent.headers_end];
        let mut frame = Frame::new();
        let mut lines = block
            .split(|&b| b == b'\n')
            .map(trim_cr)
            .filter(|l| !l.is_empty());
        if is_command {
            if let Some(first) = lines.next() {
                let text =
                    std::str::from_utf8(first).map_err(|_| Error::InvalidUtf8 { line: 1 })?;
                frame.command = Some(text.to_owned());
            }
        }
        let first_header_line = usize::from(is_command) + 1;
        for (index, line) in lines.enumerate() {
            let line_no = first_header_line + index;
            let text =
                std::str::from_utf8(line).map_err(|_| Error::InvalidUtf8 { line: line_no })?;
            let Some((name, value)) = text.split_once(':') else {
                return Err(Error::MissingColon {
                    line: line_no,
                    text: truncate(text),
                });
            };
            let value = value.strip_prefix(' ').unwrap_or(value);
            frame.headers.push((name.to_owned(), value.to_owned()));
        }
        if extent.body_len > 0 || frame.header("Content-Length").is_some() {
            frame.body = Some(buf[extent.headers_end..extent.len()].to_vec());
        }
        Ok(Some((frame, extent.len())))
    }

    /// Appends the frame's wire form to `out`: command line, headers as stored, an empty line,
    /// the body. Callers that build frames by hand own the header order.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        if let Some(command) = &self.command {
            out.extend_from_slice(command.as_bytes());
            out.push(b'\n');
        }
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        if let Some(body) = &self.body {
            out.extend_from_slice(body);
        }
    }

    /// The wire form as a new buffer.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write_to(&mut out);
        out
    }

    /// `Content-Type: auth/request`, sent on every inbound connect.
    pub fn auth_request() -> Self {
        Frame::new().with_header("Content-Type", "auth/request")
    }

    /// `command/reply` with `Reply-Text` (e.g. `+OK accepted`).
    pub fn command_reply(reply_text: impl Into<String>) -> Self {
        Frame::new()
            .with_header("Content-Type", "command/reply")
            .with_header("Reply-Text", reply_text)
    }

    /// The bgapi reply: `Reply-Text: +OK Job-UUID: <u>` plus its own `Job-UUID` header.
    pub fn bgapi_reply(job_uuid: &str) -> Self {
        Frame::command_reply(format!("+OK Job-UUID: {job_uuid}")).with_header("Job-UUID", job_uuid)
    }

    /// `api/response` carrying the command output (Content-Type first, then Content-Length).
    pub fn api_response(output: impl Into<Vec<u8>>) -> Self {
        Frame::new()
            .with_header("Content-Type", "api/response")
            .with_body(output)
    }

    /// A `text/disconnect-notice`; with a controlled session it names it and says `disconnect`.
    pub fn disconnect_notice(controlled_session: Option<&str>, body: &[u8]) -> Self {
        let mut frame = Frame::new().with_header("Content-Type", "text/disconnect-notice");
        if let Some(uuid) = controlled_session {
            frame.push_header("Controlled-Session-UUID", uuid);
            frame.push_header("Content-Disposition", "disconnect");
        }
        frame.with_body(body)
    }

    /// The linger notice sent when a lingering session's channel hangs up; `None` lingers forever.
    /// Channel-Name is not URL-encoded here, unlike inside events.
    pub fn linger_notice(session: &str, channel_name: &str, linger_seconds: Option<u32>) -> Self {
        let linger = linger_seconds.map_or_else(|| "-1".to_owned(), |s| s.to_string());
        Frame::new()
            .with_header("Content-Type", "text/disconnect-notice")
            .with_header("Controlled-Session-UUID", session)
            .with_header("Content-Disposition", "linger")
            .with_header("Channel-Name", channel_name)
            .with_header("Linger-Time", linger)
            .with_header("Content-Length", "0")
    }

    /// The outbound-socket `connect` reply: the channel data with URL-encoded values, then the
    /// reply headers last, and no Content-Length.
    pub fn connect_reply<'a, I>(channel_data: I, async_mode: bool, full: bool) -> Self
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut frame = Frame::new();
        for (name, value) in channel_data {
            frame.push_header(name, url_encode(value));
        }
        frame.push_header("Content-Type", "command/reply");
        frame.push_header("Reply-Text", "%2BOK%0A");
        frame.push_header("Socket-Mode", if async_mode { "async" } else { "static" });
        frame.push_header("Control", if full { "full" } else { "single-channel" });
        frame
    }
}

/// Appends a `text/event-plain` frame to `out`: every value URL-encoded, the raw body last with
/// its own Content-Length, the outer Content-Length counting the whole event in bytes.
pub fn write_event_plain<'a, I>(out: &mut Vec<u8>, headers: I, body: Option<&[u8]>)
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut event = Vec::with_capacity(2048);
    for (name, value) in headers {
        event.extend_from_slice(name.as_bytes());
        event.extend_from_slice(b": ");
        if value.is_empty() {
            event.extend_from_slice(b"_undef_");
        } else {
            url_encode_into(value, &mut event);
        }
        event.push(b'\n');
    }
    if let Some(body) = body {
        let _ = write!(VecWriter(&mut event), "Content-Length: {}\n\n", body.len());
        event.extend_from_slice(body);
    } else {
        event.push(b'\n');
    }
    write_event_envelope(out, "text/event-plain", &event);
}

/// Appends a `text/event-json` frame to `out`: one JSON object, values raw UTF-8 (JSON-escaped
/// as cJSON does), `ARRAY::a|:b` values as JSON arrays, a body as `Content-Length` + `_body`.
pub fn write_event_json<'a, I>(out: &mut Vec<u8>, headers: I, body: Option<&[u8]>)
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut event = Vec::with_capacity(2048);
    event.push(b'{');
    let mut first = true;
    for (name, value) in headers {
        if !first {
            event.push(b',');
        }
        first = false;
        json_string(name.as_bytes(), &mut event);
        event.push(b':');
        if let Some(items) = value.strip_prefix("ARRAY::") {
            event.push(b'[');
            for (i, item) in items.split("|:").enumerate() {
                if i > 0 {
                    event.push(b',');
                }
                json_string(item.as_bytes(), &mut event);
            }
            event.push(b']');
        } else {
            json_string(value.as_bytes(), &mut event);
        }
    }
    if let Some(body) = body {
        if !first {
            event.push(b',');
        }
        let _ = write!(
            VecWriter(&mut event),
            "\"Content-Length\":\"{}\",\"_body\":",
            body.len()
        );
        json_string(body, &mut event);
    }
    event.push(b'}');
    write_event_envelope(out, "text/event-json", &event);
}

fn write_event_envelope(out: &mut Vec<u8>, content_type: &str, event: &[u8]) {
    let _ = write!(
        VecWriter(out),
        "Content-Length: {}\nContent-Type: {content_type}\n\n",
        event.len()
    );
    out.extend_from_slice(event);
}

/// Lets `write!` format numbers straight into a byte buffer without a temporary String.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// JSON string escaping as cJSON's unformatted printer does it: quotes, backslash and control
/// bytes escaped, everything else (UTF-8 included) raw.
fn json_string(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f => {
                let _ = write!(VecWriter(out), "\\u{b:04x}");
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// Whether FreeSWITCH's `switch_url_encode` leaves this byte as it is.
fn is_url_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'/' | b',' | b'\'' | b'-' | b'.' | b'_' | b'~' | b'!' | b'(' | b')' | b'*' | b'$'
        )
}

/// URL-encodes as FreeSWITCH does, into `out`. A `%` already followed by two hex digits is
/// kept as it is (FreeSWITCH #85), so encoding is not always reversible.
pub fn url_encode_into(value: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = value.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if is_url_safe(b) {
            out.push(b);
        } else if b == b'%'
            && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
        {
            out.push(b'%');
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        }
    }
}

/// URL-encodes as FreeSWITCH does; borrows when nothing needs encoding.
pub fn url_encode(value: &str) -> Cow<'_, str> {
    if value.bytes().all(is_url_safe) {
        return Cow::Borrowed(value);
    }
    let mut out = Vec::with_capacity(value.len() + 16);
    url_encode_into(value, &mut out);
    // Encoding only adds ASCII and keeps the other bytes, so the result is still UTF-8.
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Turns each `%XX` into one byte, exactly once; a `%` without two hex digits stays as it is.
pub fn url_decode_bytes(value: &str) -> Cow<'_, [u8]> {
    url_decode_raw(value.as_bytes())
}

/// [`url_decode_bytes`] for bytes not yet known to be text.
pub fn url_decode_raw(bytes: &[u8]) -> Cow<'_, [u8]> {
    if !bytes.contains(&b'%') {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            if let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(hex_value),
                bytes.get(i + 2).and_then(hex_value),
            ) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    Cow::Owned(out)
}

/// Decodes a URL-encoded value into text; bytes that are not UTF-8 become U+FFFD.
pub fn url_decode(value: &str) -> Cow<'_, str> {
    match url_decode_bytes(value) {
        Cow::Borrowed(_) => Cow::Borrowed(value),
        Cow::Owned(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Cow::Owned(text),
            Err(err) => Cow::Owned(String::from_utf8_lossy(err.as_bytes()).into_owned()),
        },
    }
}

fn hex_value(b: &u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The value of a `Name: value` line if its name is `name` (ASCII case-insensitive).
fn strip_name<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let rest = line.get(name.len()..)?;
    if !line[..name.len()].eq_ignore_ascii_case(name) {
        return None;
    }
    let rest = rest.strip_prefix(b":")?;
    Some(rest.strip_prefix(b" ").unwrap_or(rest))
}

fn parse_content_length(value: &[u8]) -> Result<usize, Error> {
    let bad = || Error::BadContentLength {
        value: truncate(&String::from_utf8_lossy(value)),
    };
    let text = std::str::from_utf8(value).map_err(|_| bad())?.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let len: usize = text.parse().map_err(|_| Error::BodyTooLarge(usize::MAX))?;
    if len > MAX_BODY_BYTES {
        return Err(Error::BodyTooLarge(len));
    }
    Ok(len)
}

/// Keeps error messages short when a hostile peer sends a huge line.
fn truncate(text: &str) -> String {
    const MAX: usize = 80;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(mut buf: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some((frame, used)) = Frame::parse(buf).unwrap() {
            frames.push(frame);
            buf = &buf[used..];
        }
        assert!(
            buf.is_empty(),
            "left over: {:?}",
            String::from_utf8_lossy(buf)
        );
        frames
    }

    #[test]
    fn url_encode_matches_freeswitch_set() {
        assert_eq!(
            url_encode("2024-05-01 12:00:00"),
            "2024-05-01%2012%3A00%3A00"
        );
        assert_eq!(
            url_encode("sofia/external/sipp@127.0.0.1:5070"),
            "sofia/external/sipp%40127.0.0.1%3A5070"
        );
        assert_eq!(url_encode("/,'-._~!()*$"), "/,'-._~!()*$");
        assert_eq!(
            url_encode("#%&+:;<=>?@[\\]^`{|}\""),
            "%23%25%26%2B%3A%3B%3C%3D%3E%3F%40%5B%5C%5D%5E%60%7B%7C%7D%22"
        );
        assert_eq!(url_encode("a\r\nb\x7f"), "a%0D%0Ab%7F");
        assert_eq!(url_encode("é"), "%C3%A9");
    }

    #[test]
    fn url_encode_keeps_percent_before_two_hex_digits() {
        assert_eq!(url_encode("100%20x"), "100%20x");
        assert_eq!(url_encode("100% x"), "100%25%20x");
        assert_eq!(url_encode("%2"), "%252");
        assert_eq!(
            url_encode("tone_stream://%(1000,0,440)"),
            "tone_stream%3A//%25(1000,0,440)"
        );
    }

    #[test]
    fn url_decode_is_applied_once_and_tolerates_stray_percent() {
        assert_eq!(url_decode("%2541"), "%41");
        assert_eq!(url_decode("%C3%A9%20x"), "é x");
        assert_eq!(url_decode("50%"), "50%");
        assert_eq!(url_decode("%zz%4"), "%zz%4");
        assert_eq!(url_decode("%FF"), "\u{fffd}");
    }

    #[test]
    fn parses_reply_then_event_with_body_and_reports_consumed_bytes() {
        let wire = b"Content-Type: command/reply\nReply-Text: +OK accepted\n\nContent-Type: api/response\nContent-Length: 4\n\n1000rest";
        let (first, used) = Frame::parse(wire).unwrap().unwrap();
        assert_eq!(first.header("reply-text"), Some("+OK accepted"));
        assert_eq!(first.body(), None);
        let (second, used2) = Frame::parse(&wire[used..]).unwrap().unwrap();
        assert_eq!(second.content_type(), Some("api/response"));
        assert_eq!(second.body(), Some(&b"1000"[..]));
        assert_eq!(&wire[used + used2..], b"rest");
    }

    #[test]
    fn incomplete_at_every_split_point_then_complete() {
        let wire = Frame::api_response("+OK ready\n").to_wire();
        for cut in 0..wire.len() {
            assert_eq!(Frame::parse(&wire[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (frame, used) = Frame::parse(&wire).unwrap().unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(frame.body(), Some(&b"+OK ready\n"[..]));
    }

    #[test]
    fn commands_accept_crlf_and_skip_leading_blank_lines() {
        let wire = b"\r\n\n\r\nsendmsg abc\r\ncall-command: execute\r\nexecute-app-name: playback\r\ncontent-length: 3\r\n\r\nhi\n";
        let (frame, used) = Frame::parse_command(wire).unwrap().unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(frame.command(), Some("sendmsg abc"));
        assert_eq!(frame.header("Call-Command"), Some("execute"));
        assert_eq!(frame.body(), Some(&b"hi\n"[..]));
        assert_eq!(Frame::parse_command(b"\n\n\r\n").unwrap(), None);
    }

    #[test]
    fn values_keep_colons_and_empty_values() {
        let (frame, _) = Frame::parse(b"Event-Date-GMT: Sat, 28 Nov: x\nUser-Data: \n\n")
            .unwrap()
            .unwrap();
        assert_eq!(frame.header("Event-Date-GMT"), Some("Sat, 28 Nov: x"));
        assert_eq!(frame.header("User-Data"), Some(""));
    }

    #[test]
    fn limits_and_malformed_input_are_errors() {
        let huge = format!("Content-Length: {}\n\n", MAX_BODY_BYTES + 1);
        assert_eq!(
            Frame::parse(huge.as_bytes()),
            Err(Error::BodyTooLarge(MAX_BODY_BYTES + 1))
        );
        assert!(matches!(
            Frame::parse(b"Content-Length: 12x\n\n"),
            Err(Error::BadContentLength { .. })
        ));
        assert!(matches!(
            Frame::parse(b"Content-Length: -1\n\n"),
            Err(Error::BadContentLength { .. })
        ));
        assert!(matches!(
            Frame::parse(b"garbage line\n\n"),
            Err(Error::MissingColon { line: 1, .. })
        ));
        assert!(matches!(
            Frame::parse(b"A: \xff\xfe\n\n"),
            Err(Error::InvalidUtf8 { line: 1 })
        ));
        let mut block = vec![b'x'; MAX_HEADER_BYTES + 2];
        assert_eq!(Frame::parse(&block), Err(Error::HeadersTooLarge));
        block.truncate(MAX_HEADER_BYTES - 10);
        assert_eq!(Frame::parse(&block), Ok(None));
        let body_error = Frame::parse(b"Content-Length: 99999999999999999999999\n\n").unwrap_err();
        assert!(
            body_error.to_string().contains("body limit"),
            "{body_error}"
        );
    }

    #[test]
    fn encoders_produce_freeswitch_layouts() {
        assert_eq!(
            Frame::auth_request().to_wire(),
            b"Content-Type: auth/request\n\n"
        );
        assert_eq!(
            Frame::bgapi_reply("u-1").to_wire(),
            b"Content-Type: command/reply\nReply-Text: +OK Job-UUID: u-1\nJob-UUID: u-1\n\n"
        );
        assert_eq!(
            Frame::api_response("1000").to_wire(),
            b"Content-Type: api/response\nContent-Length: 4\n\n1000"
        );
        let goodbye = Frame::disconnect_notice(Some("abc"), GOODBYE).to_wire();
        assert!(goodbye.starts_with(b"Content-Type: text/disconnect-notice\nControlled-Session-UUID: abc\nContent-Disposition: disconnect\nContent-Length: 67\n\nDisconnected"));
        assert_eq!(
            Frame::linger_notice("abc", "sofia/internal/1000@127.0.0.1", None).to_wire(),
            b"Content-Type: text/disconnect-notice\nControlled-Session-UUID: abc\nContent-Disposition: linger\nChannel-Name: sofia/internal/1000@127.0.0.1\nLinger-Time: -1\nContent-Length: 0\n\n"
        );
        let connect = Frame::connect_reply(
            [
                ("Event-Name", "CHANNEL_DATA"),
                ("Channel-Name", "sofia/x@h:1"),
            ],
            true,
            true,
        );
        assert_eq!(
            connect.to_wire(),
            b"Event-Name: CHANNEL_DATA\nChannel-Name: sofia/x%40h%3A1\nContent-Type: command/reply\nReply-Text: %2BOK%0A\nSocket-Mode: async\nControl: full\n\n"
        );
    }

    #[test]
    fn plain_event_round_trips_with_encoded_values_and_raw_body() {
        let mut out = Vec::new();
        let headers = [
            ("Event-Name", "BACKGROUND_JOB"),
            ("Job-Command-Arg", "a b:c"),
            ("Empty", ""),
        ];
        write_event_plain(&mut out, headers, Some("+OK é\n".as_bytes()));
        let frames = parse_all(&out);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].content_type(), Some("text/event-plain"));
        let body = frames[0].body().unwrap();
        let (event, used) = Frame::parse(body).unwrap().unwrap();
        assert_eq!(used, body.len());
        assert_eq!(event.header("Job-Command-Arg"), Some("a%20b%3Ac"));
        assert_eq!(event.header("Empty"), Some("_undef_"));
        assert_eq!(event.body(), Some("+OK é\n".as_bytes()));
    }

    #[test]
    fn json_event_escapes_like_cjson_and_emits_arrays() {
        let mut out = Vec::new();
        let headers = [
            ("A", "x\"y\\z\r\n\t\u{1}é/"),
            ("variable_DP_MATCH", "ARRAY::7777|:7777"),
        ];
        write_event_json(&mut out, headers, Some(b"1000"));
        let frames = parse_all(&out);
        let body = std::str::from_utf8(frames[0].body().unwrap()).unwrap();
        assert_eq!(
            body,
            r#"{"A":"x\"y\\z\r\n\t\u0001é/","variable_DP_MATCH":["7777","7777"],"Content-Length":"4","_body":"1000"}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(parsed["A"], "x\"y\\z\r\n\t\u{1}é/");
    }
}
