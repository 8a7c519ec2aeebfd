//! Settings errors, worded for the person who edits the file: the file first, then the key
//! path, then what was expected. Values are never quoted back when they could be a secret.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong loading a settings file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read at all.
    #[error("{}: {source} (check the path given to --settings)", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// The text is not JSON (with comments).
    #[error("{}: line {line}, column {column}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A key holds a value of the wrong shape, or a value that fails validation.
    #[error("{}: {key}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        /// Where in the file, e.g. `dids[1].proxy`.
        key: String,
        message: String,
    },
}

impl Error {
    /// The key path the error is about, when there is one (`dids[1].password`).
    pub fn key(&self) -> Option<&str> {
        match self {
            Error::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// Rewrites a serde_json data error message ("invalid type: integer `5`, expected a string at
/// line 3 column 5") into "expected a string, found a number": the value is dropped because
/// it may be a password typed into the wrong place.
pub(crate) fn describe_data_error(error: &serde_json::Error) -> String {
    let full = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some((found, expected)) = rest.rsplit_once(", expected ") {
                let found = describe_found(found, prefix == "invalid value: ");
                return format!("expected {}, found {found}", describe_expected(expected));
            }
        }
    }
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        return format!("missing key \"{field}\" (it has no default; add it)");
    }
    if let Some(rest) = message.strip_prefix("invalid length ") {
        if let Some((_, expected)) = rest.split_once(", expected ") {
            return format!("expected {}", describe_expected(expected));
        }
    }
    message.to_owned()
}

/// The field named by a "missing field `x`" error.
pub(crate) fn missing_field(error: &serde_json::Error) -> Option<String> {
    let full = error.to_string();
    let rest = full.strip_prefix("missing field `")?;
    rest.split_once('`').map(|(field, _)| field.to_owned())
}

/// "integer `5`" -> "a number"; the value itself is left out.
fn describe_found(unexpected: &str, out_of_range: bool) -> &'static str {
    let kind = unexpected.split([' ', '`', '"']).next().unwrap_or("");
    match (kind, out_of_range) {
        ("integer" | "floating", true) => "a number out of range",
        ("integer" | "floating", false) => "a number",
        ("string", true) => "a string that does not fit",
        ("string", false) => "a string",
        ("boolean", _) => "a boolean",
        ("null", _) => "null",
        ("map", _) => "an object",
        ("sequence", _) => "a list",
        _ => "something else",
    }
}

/// Serde's names for what it wanted ("u32", "struct Did", "a sequence") in plain words.
fn describe_expected(expected: &str) -> String {
    let expected = expected.trim();
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a boolean" | "bool" => "true or false".to_owned(),
        "a sequence" => "a list".to_owned(),
        "a map" => "an object".to_owned(),
        _ if expected.starts_with("struct ") => "an object".to_owned(),
        _ => expected.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_error(json: &str) -> serde_json::Error {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Shape {
            name: String,
            count: u32,
            on: bool,
        }
        match serde_json::from_str::<Shape>(json) {
            Ok(shape) => panic!("expected an error, got {shape:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn type_errors_never_quote_the_value() {
        let message = describe_data_error(&data_error(r#"{"name": 987654, "count": 1}"#));
        assert_eq!(message, "expected a string, found a number");
        let message = describe_data_error(&data_error(r#"{"name": "a", "count": "hunter2"}"#));
        assert_eq!(
            message,
            "expected a whole number (0 or more), found a string"
        );
        assert!(!message.contains("hunter2"));
    }

    #[test]
    fn out_of_range_and_missing_fields_are_worded() {
        let message = describe_data_error(&data_error(r#"{"name": "a", "count": -4}"#));
        assert_eq!(
            message,
            "expected a whole number (0 or more), found a number out of range"
        );
        let message = describe_data_error(&data_error(r#"{"name": "a", "count": 1}"#));
        assert_eq!(message, "missing key \"on\" (it has no default; add it)");
        let message = describe_data_error(&data_error(r#"{"name": "a", "count": 1, "on": "yes"}"#));
        assert_eq!(message, "expected true or false, found a string");
    }
}
