//! Records on standard input for `partlog publish`.
//!
//! - `text`: `key<TAB>value` per line; a line without a tab is a value with
//!   an empty key; the value is the rest of the line, bytes as they are
//!   (further tabs included).
//! - `json`: one object per line, `{"key": "..", "value": .., "headers":
//!   {"name": "value"}, "filter": "..", "sequence": N}`, every field
//!   optional; the value is
//!   a UTF-8 string, `{"base64": ".."}` or `{"hex": ".."}`. `partition`,
//!   `offset` and `timestamp` are accepted and ignored, so that what
//!   `partlog read --json` prints can be published again.
//!
//! Empty lines (in JSON also blank ones) are skipped; a line ends with `\n` or `\r\n`.

use std::collections::HashMap;

use base64::Engine;
use clap::ValueEnum;
use serde_json::Value;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    #[default]
    Text,
    Json,
}

/// One record read from a line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputRecord {
    pub key: String,
    pub value: Vec<u8>,
    pub headers: HashMap<String, String>,
    /// Only from a JSON line's `filter`.
    pub filter: Option<String>,
    /// Only from a JSON line's `sequence`.
    pub sequence: Option<u64>,
}

/// Parses one line (with or without its line end); `None` for an empty line.
pub fn parse_line(format: InputFormat, line: &[u8]) -> Result<Option<InputRecord>, String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let blank = match format {
        InputFormat::Text => line.is_empty(),
        InputFormat::Json => line.iter().all(u8::is_ascii_whitespace),
    };
    if blank {
        return Ok(None);
    }
    match format {
        InputFormat::Text => text_line(line).map(Some),
        InputFormat::Json => json_line(line).map(Some),
    }
}

fn text_line(line: &[u8]) -> Result<InputRecord, String> {
    let (key, value) = match line.iter().position(|b| *b == b'\t') {
        Some(tab) => (&line[..tab], &line[tab + 1..]),
        None => (&b""[..], line),
    };
    let key = std::str::from_utf8(key)
        .map_err(|_| "the key (before the tab) is not valid UTF-8".to_owned())?;
    Ok(InputRecord {
        key: key.to_owned(),
        value: value.to_vec(),
        ..Default::default()
    })
}

fn json_line(line: &[u8]) -> Result<InputRecord, String> {
    let object = match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(object)) => object,
        Ok(_) => {
            return Err("expected a JSON object like {\"key\": \"k\", \"value\": \"v\"}".into())
        }
        Err(e) => return Err(format!("not JSON: {e}")),
    };
    let mut record = InputRecord::default();
    for (field, value) in object {
        match field.as_str() {
            "key" => record.key = string(&field, value)?,
            "value" => record.value = record_value(value)?,
            "headers" => record.headers = headers(value)?,
            "filter" => record.filter = Some(string(&field, value)?),
            "sequence" => record.sequence = Some(sequence(value)?),
            // What `partlog read --json` prints besides the record itself.
            "partition" | "offset" | "timestamp" => {}
            _ => {
                return Err(format!(
                    "unknown field {field:?}; a record has key, value, headers, filter and \
                     sequence"
                ))
            }
        }
    }
    Ok(record)
}

fn string(field: &str, value: Value) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text),
        Value::Null => Ok(String::new()),
        other => Err(format!("{field} must be a string, not {other}")),
    }
}

fn record_value(value: Value) -> Result<Vec<u8>, String> {
    const EXPECTED: &str = "value must be a string, {\"base64\": \"..\"} or {\"hex\": \"..\"}";
    match value {
        Value::String(text) => Ok(text.into_bytes()),
        Value::Null => Ok(Vec::new()),
        Value::Object(object) if object.len() == 1 => {
            let (encoding, encoded) = object.into_iter().next().expect("one entry");
            let Value::String(encoded) = encoded else {
                return Err(EXPECTED.into());
            };
            match encoding.as_str() {
                "base64" => base64::engine::general_purpose::STANDARD
                    .decode(encoded.as_bytes())
                    .map_err(|e| format!("value.base64 is not base64: {e}")),
                "hex" => hex_bytes(&encoded),
                _ => Err(EXPECTED.into()),
            }
        }
        _ => Err(EXPECTED.into()),
    }
}

fn hex_bytes(text: &str) -> Result<Vec<u8>, String> {
    let invalid = || format!("value.hex is not an even number of hex digits: {text:?}");
    if text.len() % 2 != 0 || !text.is_ascii() {
        return Err(invalid());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|_| invalid()))
        .collect()
}

fn headers(value: Value) -> Result<HashMap<String, String>, String> {
    match value {
        Value::Object(object) => object
            .into_iter()
            .map(|(name, value)| match value {
                Value::String(text) => Ok((name, text)),
                other => Err(format!("header {name:?} must be a string, not {other}")),
            })
            .collect(),
        Value::Null => Ok(HashMap::new()),
        other => Err(format!("headers must be an object of strings, not {other}")),
    }
}

fn sequence(value: Value) -> Result<u64, String> {
    match value.as_u64() {
        Some(sequence) if sequence > 0 => Ok(sequence),
        _ => Err(format!("sequence must be a whole number >= 1, not {value}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(line: &[u8]) -> Result<Option<InputRecord>, String> {
        parse_line(InputFormat::Text, line)
    }

    fn json(line: &str) -> Result<Option<InputRecord>, String> {
        parse_line(InputFormat::Json, line.as_bytes())
    }

    fn record(key: &str, value: &[u8]) -> Option<InputRecord> {
        Some(InputRecord {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
    }

    #[test]
    fn text_lines() {
        assert_eq!(text(b"k\tv\n"), Ok(record("k", b"v")));
        assert_eq!(text(b"k\tv\r\n"), Ok(record("k", b"v")));
        assert_eq!(text(b"just a value"), Ok(record("", b"just a value")));
        assert_eq!(text(b"\tv"), Ok(record("", b"v")));
        assert_eq!(text(b"k\t"), Ok(record("k", b"")));
        assert_eq!(text(b"k\ta\tb"), Ok(record("k", b"a\tb")));
        assert_eq!(text(b"k\t\xff\x00"), Ok(record("k", b"\xff\x00")));
        assert_eq!(text(b"\n"), Ok(None));
        assert_eq!(text(b""), Ok(None));
        assert!(text(b"\xff\tv").unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn json_lines() {
        assert_eq!(
            json(
                r#"{"key": "k", "value": "v", "headers": {"h": "1"}, "filter": "eu", "sequence": 3}"#
            ),
            Ok(Some(InputRecord {
                key: "k".into(),
                value: b"v".to_vec(),
                headers: [("h".to_owned(), "1".to_owned())].into(),
                filter: Some("eu".into()),
                sequence: Some(3),
            }))
        );
        assert_eq!(
            json(r#"{"value": {"base64": "/wA="}}"#),
            Ok(record("", b"\xff\x00"))
        );
        assert_eq!(
            json(r#"{"value": {"hex": "ff00"}}"#),
            Ok(record("", b"\xff\x00"))
        );
        assert_eq!(json("{}"), Ok(record("", b"")));
        assert_eq!(json("  "), Ok(None));
        assert_eq!(json(""), Ok(None));
        // What `read --json` prints reads back as the same record.
        assert_eq!(
            json(
                r#"{"partition":2,"offset":7,"timestamp":"2026-11-28T09:00:00.005Z","key":"k","headers":{},"value":"v"}"#
            ),
            Ok(record("k", b"v"))
        );
    }

    #[test]
    fn bad_json_lines_say_what_is_wrong() {
        let error = |line: &str| json(line).unwrap_err();
        assert!(error("k\tv").contains("not JSON"));
        assert!(error("[1]").contains("JSON object"));
        assert!(error(r#"{"key": 1}"#).contains("key must be a string"));
        assert!(error(r#"{"value": 1}"#).contains("value must be"));
        assert!(error(r#"{"value": {"base64": "!"}}"#).contains("not base64"));
        assert!(error(r#"{"value": {"hex": "f"}}"#).contains("hex"));
        assert!(error(r#"{"value": {"utf16": "x"}}"#).contains("value must be"));
        assert!(error(r#"{"headers": {"h": 1}}"#).contains("header \"h\""));
        assert!(error(r#"{"sequence": 0}"#).contains(">= 1"));
        assert!(error(r#"{"sequence": -1}"#).contains(">= 1"));
        assert!(error(r#"{"kye": "k"}"#).contains("unknown field \"kye\""));
    }
}
