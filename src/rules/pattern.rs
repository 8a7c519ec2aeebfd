//! Lua patterns (the `string.find` flavour AwesomeWM rules use), validated when a rule is
//! compiled and matched without allocating.
//!
//! Written here rather than taken from the `lua-patterns` crate: that crate reads past the end
//! of an empty pattern, prints to stdout while validating and panics when a match hits its
//! recursion limit, and a rule from a user's repo must never take the daemon down. The
//! invariant: a `Pattern` only exists once its syntax was checked, and `find` is bounded in
//! depth and steps, so matching cannot panic or run away on a long caller ID.

use std::fmt;

const MAX_CAPTURES: usize = 32;
/// Lua's own recursion limit for one match (MAXCCALLS).
const MAX_DEPTH: usize = 200;
/// Steps one search may take before it gives up (counted as "no match"); patterns such as
/// `.-.-.-x` are polynomial in the subject's length and caller IDs come from the network.
const MAX_STEPS: u32 = 200_000;

/// A malformed pattern, with what is wrong in Lua's own words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError {
    pub message: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A checked Lua pattern.
#[derive(Clone, Debug)]
pub struct Pattern {
    source: String,
    anchored: bool,
    /// No magic characters: a plain substring search does.
    literal: bool,
}

#[derive(Clone, Copy)]
enum CaptureLen {
    Unfinished,
    Position,
    Len(usize),
}

impl Pattern {
    /// Checks the syntax of `source` as a Lua pattern.
    pub fn new(source: &str) -> Result<Pattern, PatternError> {
        let bytes = source.as_bytes();
        let anchored = bytes.first() == Some(&b'^');
        validate(&bytes[usize::from(anchored)..])?;
        let literal = !bytes.iter().any(|byte| b"^$*+?.()[]%-".contains(byte));
        Ok(Pattern {
            source: source.to_owned(),
            anchored,
            literal,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern's leftmost match in `subject` is non-empty (an empty match counts
    /// as no match).
    pub fn find(&self, subject: &str) -> bool {
        if self.literal {
            return !self.source.is_empty() && subject.contains(self.source.as_str());
        }
        let pattern = &self.source.as_bytes()[usize::from(self.anchored)..];
        let mut state = MatchState {
            src: subject.as_bytes(),
            pat: pattern,
            level: 0,
            captures: [(0, CaptureLen::Unfinished); MAX_CAPTURES],
            depth: 0,
            steps: 0,
        };
        let mut start = 0;
        loop {
            state.level = 0;
            state.depth = 0;
            if let Some(end) = state.do_match(start, 0) {
                return end > start;
            }
            if self.anchored || start >= state.src.len() || state.steps > MAX_STEPS {
                return false;
            }
            start += 1;
        }
    }
}

fn error(message: impl Into<String>) -> Result<(), PatternError> {
    Err(PatternError {
        message: message.into(),
    })
}

/// Walks the pattern once the way the matcher will, so the matcher never meets bad syntax.
fn validate(pat: &[u8]) -> Result<(), PatternError> {
    let mut open: Vec<usize> = Vec::new();
    let mut closed = [false; MAX_CAPTURES];
    let mut level = 0;
    let mut p = 0;
    while p < pat.len() {
        match pat[p] {
            b'(' => {
                if pat.get(p + 1) == Some(&b')') {
                    if level >= MAX_CAPTURES {
                        return error("too many captures");
                    }
                    closed[level] = true;
                    level += 1;
                    p += 2;
                } else {
                    if level >= MAX_CAPTURES {
                        return error("too many captures");
                    }
                    open.push(level);
                    level += 1;
                    p += 1;
                }
                continue;
            }
            b')' => {
                match open.pop() {
                    Some(index) => closed[index] = true,
                    None => return error("unmatched ')' (write %) for a literal parenthesis)"),
                }
                p += 1;
                continue;
            }
            b'%' => match pat.get(p + 1) {
                None => return error("pattern ends with '%' (write %% for a literal percent)"),
                Some(b'b') => {
                    if pat.len() < p + 4 {
                        return error(
                            "missing arguments to '%b' (expected two characters, e.g. %b())",
                        );
                    }
                    p += 4;
                    continue;
                }
                Some(b'f') => {
                    if pat.get(p + 2) != Some(&b'[') {
                        return error("missing '[' after '%f' (expected e.g. %f[%w])");
                    }
                    p = set_end(pat, p + 2)?;
                    continue;
                }
                Some(digit @ b'0'..=b'9') => {
                    let index = usize::from(digit - b'0');
                    if index == 0 || index > level || !closed[index - 1] {
                        return error(format!(
                            "invalid capture index %{index} (refers to no finished capture)"
                        ));
                    }
                    p += 2;
                    continue;
                }
                Some(_) => p += 2,
            },
            b'[' => p = set_end(pat, p)?,
            _ => p += 1,
        }
        if matches!(pat.get(p), Some(b'*' | b'+' | b'-' | b'?')) {
            p += 1;
        }
    }
    if !open.is_empty() {
        return error("unfinished capture (missing ')')");
    }
    Ok(())
}

/// Index just past the `]` closing the set that starts at `p` (which holds `[`).
fn set_end(pat: &[u8], p: usize) -> Result<usize, PatternError> {
    let mut q = p + 1;
    if pat.get(q) == Some(&b'^') {
        q += 1;
    }
    // The first character of a set is never its end, so `[]]` is a set holding `]`.
    loop {
        let Some(&c) = pat.get(q) else {
            return Err(PatternError {
                message: "missing ']' (write %[ for a literal bracket)".into(),
            });
        };
        q += 1;
        if c == b'%' {
            if q >= pat.len() {
                return Err(PatternError {
                    message: "missing ']' (write %[ for a literal bracket)".into(),
                });
            }
            q += 1;
        }
        if pat.get(q) == Some(&b']') {
            return Ok(q + 1);
        }
    }
}

fn class_matches(c: u8, class: u8) -> bool {
    let result = match class.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c.is_ascii_control(),
        b'd' => c.is_ascii_digit(),
        b'g' => c.is_ascii_graphic(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        b's' => c.is_ascii_whitespace() || c == 0x0b,
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        _ => return class == c,
    };
    if class.is_ascii_uppercase() {
        !result
    } else {
        result
    }
}

struct MatchState<'a> {
    src: &'a [u8],
    pat: &'a [u8],
    level: usize,
    captures: [(usize, CaptureLen); MAX_CAPTURES],
    depth: usize,
    steps: u32,
}

impl MatchState<'_> {
    /// End of the single-character class starting at `p` (validated, so in bounds).
    fn class_end(&self, p: usize) -> usize {
        match self.pat[p] {
            b'%' => p + 2,
            b'[' => set_end(self.pat, p).unwrap_or(self.pat.len()),
            _ => p + 1,
        }
    }

    /// `c` against the set `[...]` spanning `p..end` (`end` just past `]`).
    fn set_matches(&self, c: u8, p: usize, end: usize) -> bool {
        let close = end - 1;
        let mut p = p + 1;
        let mut wanted = true;
        if self.pat[p] == b'^' {
            wanted = false;
            p += 1;
        }
        while p < close {
            let item = self.pat[p];
            if item == b'%' && p + 1 < close {
                if class_matches(c, self.pat[p + 1]) {
                    return wanted;
                }
                p += 2;
            } else if p + 2 < close && self.pat[p + 1] == b'-' {
                if item <= c && c <= self.pat[p + 2] {
                    return wanted;
                }
                p += 3;
            } else {
                if item == c {
                    return wanted;
                }
                p += 1;
            }
        }
        !wanted
    }

    fn single_match(&self, s: usize, p: usize, end: usize) -> bool {
        let Some(&c) = self.src.get(s) else {
            return false;
        };
        match self.pat[p] {
            b'.' => true,
            b'%' => class_matches(c, self.pat[p + 1]),
            b'[' => self.set_matches(c, p, end),
            literal => literal == c,
        }
    }

    fn do_match(&mut self, mut s: usize, mut p: usize) -> Option<usize> {
        self.depth += 1;
        let result = self.do_match_inner(&mut s, &mut p);
        self.depth -= 1;
        result
    }

    fn do_match_inner(&mut self, s: &mut usize, p: &mut usize) -> Option<usize> {
        if self.depth > MAX_DEPTH {
            self.steps = MAX_STEPS + 1;
            return None;
        }
        loop {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                return None;
            }
            let Some(&item) = self.pat.get(*p) else {
                return Some(*s);
            };
            match item {
                b'(' => {
                    return if self.pat.get(*p + 1) == Some(&b')') {
                        self.start_capture(*s, *p + 2, CaptureLen::Position)
                    } else {
                        self.start_capture(*s, *p + 1, CaptureLen::Unfinished)
                    };
                }
                b')' => return self.end_capture(*s, *p + 1),
                b'$' if *p + 1 == self.pat.len() => {
                    return (*s == self.src.len()).then_some(*s);
                }
                b'%' if self.pat[*p + 1] == b'b' => {
                    *s = self.match_balance(*s, *p + 2)?;
                    *p += 4;
                    continue;
                }
                b'%' if self.pat[*p + 1] == b'f' => {
                    let set = *p + 2;
                    let end = self.class_end(set);
                    let previous = if *s == 0 { 0 } else { self.src[*s - 1] };
                    let current = self.src.get(*s).copied().unwrap_or(0);
                    if !self.set_matches(previous, set, end) && self.set_matches(current, set, end)
                    {
                        *p = end;
                        continue;
                    }
                    return None;
                }
                b'%' if self.pat[*p + 1].is_ascii_digit() => {
                    *s = self.match_capture(*s, usize::from(self.pat[*p + 1] - b'1'))?;
                    *p += 2;
                    continue;
                }
                _ => {}
            }
            let end = self.class_end(*p);
            let matched = self.single_match(*s, *p, end);
            match self.pat.get(end) {
                Some(b'?') => {
                    if matched {
                        if let Some(found) = self.do_match(*s + 1, end + 1) {
                            return Some(found);
                        }
                    }
                    *p = end + 1;
                }
                Some(b'+') => {
                    return if matched {
                        self.max_expand(*s + 1, *p, end)
                    } else {
                        None
                    };
                }
                Some(b'*') => return self.max_expand(*s, *p, end),
                Some(b'-') => return self.min_expand(*s, *p, end),
                _ => {
                    if !matched {
                        return None;
                    }
                    *s += 1;
                    *p = end;
                }
            }
        }
    }

    fn max_expand(&mut self, s: usize, p: usize, end: usize) -> Option<usize> {
        let mut count = 0;
        while self.single_match(s + count, p, end) {
            count += 1;
        }
        loop {
            if let Some(found) = self.do_match(s + count, end + 1) {
                return Some(found);
            }
            if count == 0 || self.steps > MAX_STEPS {
                return None;
            }
            count -= 1;
        }
    }

    fn min_expand(&mut self, mut s: usize, p: usize, end: usize) -> Option<usize> {
        loop {
            if let Some(found) = self.do_match(s, end + 1) {
                return Some(found);
            }
            if self.steps > MAX_STEPS || !self.single_match(s, p, end) {
                return None;
            }
            s += 1;
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, what: CaptureLen) -> Option<usize> {
        let level = self.level;
        self.captures[level] = (s, what);
        self.level += 1;
        let found = self.do_match(s, p);
        if found.is_none() {
            self.level -= 1;
        }
        found
    }

    fn end_capture(&mut self, s: usize, p: usize) -> Option<usize> {
        let open = (0..self.level)
            .rev()
            .find(|&index| matches!(self.captures[index].1, CaptureLen::Unfinished))?;
        self.captures[open].1 = CaptureLen::Len(s - self.captures[open].0);
        let found = self.do_match(s, p);
        if found.is_none() {
            self.captures[open].1 = CaptureLen::Unfinished;
        }
        found
    }

    fn match_balance(&self, s: usize, p: usize) -> Option<usize> {
        let (open, close) = (self.pat[p], self.pat[p + 1]);
        if self.src.get(s) != Some(&open) {
            return None;
        }
        let mut depth = 1;
        for (offset, &c) in self.src[s + 1..].iter().enumerate() {
            if c == close {
                depth -= 1;
                if depth == 0 {
                    return Some(s + 1 + offset + 1);
                }
            } else if c == open {
                depth += 1;
            }
        }
        None
    }

    fn match_capture(&self, s: usize, index: usize) -> Option<usize> {
        if index >= self.level {
            return None;
        }
        let (start, CaptureLen::Len(len)) = self.captures[index] else {
            return None;
        };
        let captured = &self.src[start..start + len];
        self.src[s..].starts_with(captured).then_some(s + len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finds(pattern: &str, subject: &str) -> bool {
        Pattern::new(pattern)
            .unwrap_or_else(|e| panic!("{pattern}: {e}"))
            .find(subject)
    }

    #[test]
    fn plain_text_is_searched_unanchored() {
        assert!(finds("555", "+15145550199"));
        assert!(!finds("556", "+15145550199"));
    }

    #[test]
    fn anchors_only_at_the_ends() {
        assert!(finds("^%+1514", "+15145550199"));
        assert!(!finds("^514", "+15145550199"));
        assert!(finds("0199$", "+15145550199"));
        assert!(!finds("0198$", "+15145550199"));
        assert!(finds("a^b", "xa^by"));
        assert!(finds("a$b", "a$b"));
    }

    #[test]
    fn leading_plus_is_literal_but_later_magic() {
        assert!(finds("+1514", "+15145550199"));
        // `4+` means "one or more 4", so the dash-free text still matches.
        assert!(finds("^%+1514+5", "+15145550199"));
    }

    #[test]
    fn dash_is_a_lazy_quantifier_and_dot_any_character() {
        // "514-555" reads as "51", then zero or more '4' (lazy), then "555".
        assert!(finds("514-555", "+1515550000"));
        assert!(finds("514%-555", "514-555-0199"));
        assert!(!finds("514%-555", "5145550199"));
        assert!(finds("1.2", "1x2"));
        assert!(!finds("1%.2", "1x2"));
    }

    #[test]
    fn classes_sets_and_complements() {
        assert!(finds("^%d+$", "15145550199"));
        assert!(!finds("^%d+$", "+15145550199"));
        assert!(finds("^[%+%d]+$", "+15145550199"));
        assert!(finds("[^%d]", "12a4"));
        assert!(!finds("[^%d]", "1234"));
        assert!(finds("^%u%u$", "FR"));
        assert!(!finds("^%u%u$", "fr"));
        assert!(finds("[a-c]", "zzb"));
        assert!(finds("[]]", "a]"));
        assert!(finds("%S", "  x"));
    }

    #[test]
    fn empty_match_is_no_match() {
        assert!(!finds("", "anything"));
        assert!(!finds("%d*", "abc123"));
        assert!(!finds("x?", "abc"));
        assert!(finds("%d+", "abc123"));
    }

    #[test]
    fn captures_balance_and_frontier() {
        assert!(finds("(%d)%1", "1223"));
        assert!(!finds("(%d)%1", "1234"));
        assert!(finds("%b()", "call (home)"));
        assert!(finds("%f[%w]home", "my home"));
        assert!(!finds("%f[%w]ome", "my home"));
        assert!(finds("()a", "ba"));
    }

    #[test]
    fn malformed_patterns_are_errors_not_panics() {
        for bad in [
            "%", "[abc", "(abc", "abc)", "%b(", "%f%w", "%1", "(a)%2", "[%",
        ] {
            assert!(Pattern::new(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn runaway_patterns_give_up_instead_of_hanging() {
        let subject = "a".repeat(5000);
        let start = std::time::Instant::now();
        assert!(!finds(".-.-.-.-b", &subject));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
        let deep = "a?".repeat(300) + "b";
        assert!(!finds(&deep, &subject));
    }
}
