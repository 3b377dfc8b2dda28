//! What the client subcommands print: aligned tables for people, one JSON
//! object per line for scripts (`--json`), from the same rows.
//!
//! Every kind of output is a [`Row`]: its JSON form is its `Serialize`
//! implementation, its table form its [`Row::cells`] under
//! [`Row::HEADER`]. A bounded answer is printed as one table aligned on its
//! widest cells; an unbounded one (records, as `read` and `tail` print
//! them) row by row with the fixed column widths of [`Row::WIDTHS`].

use std::collections::BTreeMap;
use std::io::{self, Write};

use base64::Engine;
use chrono::{DateTime, SecondsFormat};
use clap::ValueEnum;
use serde::Serialize;

use crate::proto;

/// Spaces between table columns.
const GAP: &str = "  ";

/// How record values are rendered; see `--values`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ValueFormat {
    #[default]
    Auto,
    Utf8,
    Base64,
    Hex,
}

/// A value in JSON output: a string, or an object naming its encoding,
/// `{"base64": ..}` or `{"hex": ..}` (which `publish --format json` reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum JsonValue {
    Text(String),
    Base64 { base64: String },
    Hex { hex: String },
}

/// Renders a value for JSON output.
pub fn json_value(bytes: &[u8], format: ValueFormat) -> JsonValue {
    match format {
        ValueFormat::Auto => match std::str::from_utf8(bytes) {
            Ok(text) => JsonValue::Text(text.to_owned()),
            Err(_) => JsonValue::Base64 {
                base64: base64_text(bytes),
            },
        },
        ValueFormat::Utf8 => JsonValue::Text(String::from_utf8_lossy(bytes).into_owned()),
        ValueFormat::Base64 => JsonValue::Base64 {
            base64: base64_text(bytes),
        },
        ValueFormat::Hex => JsonValue::Hex {
            hex: hex_text(bytes),
        },
    }
}

/// Renders a value for a table: text with control characters escaped, so
/// a value can neither break the line nor send terminal escapes; `auto`
/// marks base64 with a `base64:` prefix. An empty value is `""`.
pub fn human_value(bytes: &[u8], format: ValueFormat) -> String {
    let text = match format {
        ValueFormat::Auto => match std::str::from_utf8(bytes) {
            Ok(text) => escape(text),
            Err(_) => format!("base64:{}", base64_text(bytes)),
        },
        ValueFormat::Utf8 => escape(&String::from_utf8_lossy(bytes)),
        ValueFormat::Base64 => base64_text(bytes),
        ValueFormat::Hex => hex_text(bytes),
    };
    if text.is_empty() {
        "\"\"".into()
    } else {
        text
    }
}

fn base64_text(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn hex_text(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Control characters as Rust escapes (`\n`, `\t`, `\u{1b}`); the rest as is.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// A table cell for an optional value: the value, or `-`.
pub fn cell<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

/// A protobuf timestamp as RFC 3339 UTC with milliseconds.
pub fn timestamp(timestamp: Option<prost_types::Timestamp>) -> Option<String> {
    let timestamp = timestamp?;
    let time = DateTime::from_timestamp(timestamp.seconds, u32::try_from(timestamp.nanos).ok()?)?;
    Some(time.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// One line of output in both forms.
pub trait Row: Serialize {
    /// Column titles of the table form.
    const HEADER: &'static [&'static str];
    /// Least width of each column when printed row by row; 0 = the title's.
    const WIDTHS: &'static [usize] = &[];
    /// The row's table cells, one per header column.
    fn cells(&self) -> Vec<String>;
}

/// Cells joined by [`GAP`], each but the last padded to its width.
fn format_line(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            line.push_str(GAP);
        }
        line.push_str(cell);
        if i + 1 < cells.len() {
            let width = widths.get(i).copied().unwrap_or(0);
            let len = cell.chars().count();
            line.extend(std::iter::repeat_n(' ', width.saturating_sub(len)));
        }
    }
    // An empty last cell leaves no padding behind.
    line.truncate(line.trim_end_matches(' ').len());
    line
}

/// A table aligned on its widest cells, header first.
pub fn table<R: Row>(rows: &[R]) -> String {
    let header: Vec<String> = R::HEADER.iter().map(|h| (*h).to_owned()).collect();
    let body: Vec<Vec<String>> = rows.iter().map(Row::cells).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for cells in &body {
        for (width, cell) in widths.iter_mut().zip(cells) {
            *width = (*width).max(cell.chars().count());
        }
    }
    std::iter::once(&header)
        .chain(&body)
        .map(|cells| format_line(cells, &widths) + "\n")
        .collect()
}

/// The fixed widths rows of `R` are printed with one by one.
fn stream_widths<R: Row>() -> Vec<usize> {
    R::HEADER
        .iter()
        .enumerate()
        .map(|(i, h)| {
            h.chars()
                .count()
                .max(R::WIDTHS.get(i).copied().unwrap_or(0))
        })
        .collect()
}

/// Standard output in the chosen form.
pub struct Printer {
    json: bool,
    out: io::Stdout,
    header_printed: bool,
}

impl Printer {
    pub fn new(json: bool) -> Printer {
        Printer {
            json,
            out: io::stdout(),
            header_printed: false,
        }
    }

    pub fn json(&self) -> bool {
        self.json
    }

    /// A complete answer: an aligned table, or one JSON line per row.
    pub fn rows<R: Row>(&mut self, rows: &[R]) -> io::Result<()> {
        let mut out = self.out.lock();
        if self.json {
            for row in rows {
                writeln!(out, "{}", json_line(row))?;
            }
        } else {
            out.write_all(table(rows).as_bytes())?;
        }
        out.flush()
    }

    /// One row of an open-ended answer; the table header comes first.
    pub fn row<R: Row>(&mut self, row: &R) -> io::Result<()> {
        if self.json {
            return self.write_line(&json_line(row));
        }
        self.header::<R>()?;
        self.write_line(&format_line(&row.cells(), &stream_widths::<R>()))
    }

    /// The header of an open-ended table, once.
    fn header<R: Row>(&mut self) -> io::Result<()> {
        if self.header_printed {
            return Ok(());
        }
        self.header_printed = true;
        let header: Vec<String> = R::HEADER.iter().map(|h| (*h).to_owned()).collect();
        self.write_line(&format_line(&header, &stream_widths::<R>()))
    }

    /// A line between the rows of an open-ended answer (e.g. an
    /// assignment event while tailing), its first cell aligned with them.
    pub fn note<R: Row, J: Serialize>(&mut self, cells: &[String], json: &J) -> io::Result<()> {
        if self.json {
            return self.write_line(&json_line(json));
        }
        self.header::<R>()?;
        self.write_line(&format_line(cells, &stream_widths::<R>()))
    }

    /// Where an epoch marker sits among a partition's records (a note in
    /// the records' table, or a JSON line of its own).
    pub fn epoch_marker(&mut self, marker: &proto::EpochMarker) -> io::Result<()> {
        #[derive(Serialize)]
        struct EpochMarkerLine {
            partition: u32,
            epoch_marker: u64,
            from_partitions: u32,
            to_partitions: u32,
        }
        let line = EpochMarkerLine {
            partition: marker.partition,
            epoch_marker: marker.offset,
            from_partitions: marker.from_partitions,
            to_partitions: marker.to_partitions,
        };
        let text = format!(
            "epoch marker at offset {}: {} -> {} partitions",
            marker.offset, marker.from_partitions, marker.to_partitions
        );
        self.note::<RecordRow, _>(&[marker.partition.to_string(), text], &line)
    }

    /// A one-line message, or its JSON form.
    pub fn message<J: Serialize>(&mut self, human: &str, json: &J) -> io::Result<()> {
        if self.json {
            self.write_line(&json_line(json))
        } else {
            self.write_line(human)
        }
    }

    fn write_line(&mut self, line: &str) -> io::Result<()> {
        let mut out = self.out.lock();
        writeln!(out, "{line}")?;
        out.flush()
    }
}

fn json_line<J: Serialize>(value: &J) -> String {
    serde_json::to_string(value).expect("output rows serialize to JSON")
}

/// A stored record as `read` and `tail` print it.
#[derive(Debug, Serialize)]
pub struct RecordRow {
    pub partition: u32,
    pub offset: u64,
    pub timestamp: Option<String>,
    pub key: String,
    pub headers: BTreeMap<String, String>,
    /// In JSON only when the record has one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub filter: String,
    pub value: JsonValue,
    #[serde(skip)]
    human_value: String,
}

impl RecordRow {
    pub fn new(record: proto::Record, format: ValueFormat) -> RecordRow {
        RecordRow {
            partition: record.partition,
            offset: record.offset,
            timestamp: timestamp(record.timestamp),
            key: record.key,
            headers: record.headers.into_iter().collect(),
            filter: record.filter,
            value: json_value(&record.value, format),
            human_value: human_value(&record.value, format),
        }
    }
}

impl Row for RecordRow {
    const HEADER: &'static [&'static str] = &[
        "PARTITION",
        "OFFSET",
        "TIMESTAMP",
        "KEY",
        "HEADERS",
        "FILTER",
        "VALUE",
    ];
    const WIDTHS: &'static [usize] = &[0, 0, 24, 14, 0, 0];

    fn cells(&self) -> Vec<String> {
        let headers = self
            .headers
            .iter()
            .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
            .collect::<Vec<_>>()
            .join(",");
        vec![
            self.partition.to_string(),
            self.offset.to_string(),
            cell(self.timestamp.as_ref()),
            if self.key.is_empty() {
                "-".into()
            } else {
                escape(&self.key)
            },
            if headers.is_empty() {
                "-".into()
            } else {
                headers
            },
            if self.filter.is_empty() {
                "-".into()
            } else {
                escape(&self.filter)
            },
            self.human_value.clone(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Pair {
        name: &'static str,
        count: Option<u32>,
    }

    impl Row for Pair {
        const HEADER: &'static [&'static str] = &["NAME", "COUNT"];
        fn cells(&self) -> Vec<String> {
            vec![self.name.into(), cell(self.count)]
        }
    }

    #[test]
    fn tables_align_on_the_widest_cell_without_trailing_spaces() {
        let rows = [
            Pair {
                name: "a",
                count: Some(1),
            },
            Pair {
                name: "longer name",
                count: None,
            },
        ];
        assert_eq!(
            table(&rows),
            "NAME         COUNT\n\
             a            1\n\
             longer name  -\n"
        );
        assert_eq!(table::<Pair>(&[]), "NAME  COUNT\n");
        let empty_last = Pair {
            name: "a",
            count: None,
        };
        assert_eq!(
            format_line(&[empty_last.name.into(), String::new()], &[4, 5]),
            "a"
        );
    }

    #[test]
    fn rows_serialize_as_json_lines() {
        let row = Pair {
            name: "a",
            count: None,
        };
        assert_eq!(json_line(&row), r#"{"name":"a","count":null}"#);
    }

    #[test]
    fn values_in_json() {
        assert_eq!(
            json_value(b"hi", ValueFormat::Auto),
            JsonValue::Text("hi".into())
        );
        assert_eq!(
            json_value(&[0xff, 0x00], ValueFormat::Auto),
            JsonValue::Base64 {
                base64: "/wA=".into()
            }
        );
        assert_eq!(
            json_value(&[0xff, b'a'], ValueFormat::Utf8),
            JsonValue::Text("\u{fffd}a".into())
        );
        assert_eq!(
            json_value(b"hi", ValueFormat::Hex),
            JsonValue::Hex { hex: "6869".into() }
        );
        assert_eq!(
            json_line(&json_value(b"hi", ValueFormat::Base64)),
            r#"{"base64":"aGk="}"#
        );
    }

    #[test]
    fn values_in_tables() {
        assert_eq!(human_value(b"{\"a\": 1}", ValueFormat::Auto), "{\"a\": 1}");
        assert_eq!(human_value(&[0xff, 0x00], ValueFormat::Auto), "base64:/wA=");
        assert_eq!(human_value(&[0xff, 0x00], ValueFormat::Base64), "/wA=");
        assert_eq!(human_value(b"hi", ValueFormat::Hex), "6869");
        assert_eq!(human_value(b"", ValueFormat::Auto), "\"\"");
        // Neither a new line nor a terminal escape reaches the terminal.
        assert_eq!(
            human_value(b"a\nb\t\x1b[31m", ValueFormat::Auto),
            "a\\nb\\t\\u{1b}[31m"
        );
    }

    #[test]
    fn record_rows() {
        let record = proto::Record {
            partition: 2,
            offset: 7,
            key: "k".into(),
            value: b"v".to_vec().into(),
            headers: [
                ("b".to_owned(), "2".to_owned()),
                ("a".to_owned(), "1".to_owned()),
            ]
            .into_iter()
            .collect(),
            timestamp: Some(prost_types::Timestamp {
                seconds: 1_795_856_400,
                nanos: 5_000_000,
            }),
            filter: "eu".into(),
        };
        let row = RecordRow::new(record, ValueFormat::Auto);
        assert_eq!(
            row.cells(),
            [
                "2",
                "7",
                "2026-11-28T09:00:00.005Z",
                "k",
                "a=1,b=2",
                "eu",
                "v"
            ]
        );
        assert_eq!(
            json_line(&row),
            r#"{"partition":2,"offset":7,"timestamp":"2026-11-28T09:00:00.005Z","key":"k","headers":{"a":"1","b":"2"},"filter":"eu","value":"v"}"#
        );
        let widths = stream_widths::<RecordRow>();
        assert_eq!(widths, [9, 6, 24, 14, 7, 6, 5]);
        assert_eq!(
            format_line(&row.cells(), &widths),
            "2          7       2026-11-28T09:00:00.005Z  k               a=1,b=2  eu      v"
        );
    }
}
