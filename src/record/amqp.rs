//! Records as AMQP 1.0 messages, read and written without building a
//! message object.
//!
//! Writing ([`encode`]): the application properties (the key as
//! `partlog.key`, then the headers, as strings) and one `data` section
//! holding the value. The value is not copied here: the message is the
//! bytes before it ([`Encoded::head`]) and the value itself, which the
//! publisher writes after them.
//!
//! A record read back is its message's body, its `partlog.key` application
//! property and its other application properties as text; every other
//! section is skipped. The body is borrowed from the chunk it came in
//! (no copy) when it is one `data` section, as partlog and most clients
//! write it.
//!
//! Text forms of non-string property values: integers and booleans as
//! Rust prints them, floats likewise, a char as itself, a UUID hyphenated,
//! a timestamp as RFC 3339 UTC with milliseconds, binary and decimals as
//! lowercase hex, null as empty. Properties holding lists, maps, arrays or
//! described values are left out: they are not simple values, which AMQP
//! requires of application properties.

use std::collections::BTreeMap;

use bytes::Bytes;

/// What a record keeps of a message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    pub value: Bytes,
    pub properties: BTreeMap<String, String>,
}

/// Why bytes are not an AMQP 1.0 message partlog can read.
#[derive(Debug, PartialEq, Eq)]
pub struct NotAmqp(pub &'static str);

/// Section descriptors (`amqp:...` codes).
const APPLICATION_PROPERTIES: u64 = 0x74;
const DATA: u64 = 0x75;
const AMQP_VALUE: u64 = 0x77;
/// The lowest and highest section codes of a message.
const FIRST_SECTION: u64 = 0x70;
const LAST_SECTION: u64 = 0x78;

/// A record's message as it is written: `head` (sections and the data
/// section's header) then `value`; and its filter value, which the publish
/// frame carries beside the message for the broker's chunk filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub head: Vec<u8>,
    pub value: Bytes,
    pub filter: Option<String>,
}

impl Encoded {
    /// The message's size in bytes.
    pub fn size(&self) -> usize {
        self.head.len().saturating_add(self.value.len())
    }
}

/// The message of a record: its `properties` (name, value) as application
/// properties (none: no section), its value as one data section.
pub fn encode<'a>(
    properties: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    value: Bytes,
) -> Encoded {
    let mut head = Vec::new();
    let count = properties.clone().count();
    if count > 0 {
        head.extend_from_slice(&[0x00, 0x53, APPLICATION_PROPERTIES as u8]);
        let mut map = Vec::new();
        for (name, text) in properties {
            put_string(&mut map, name);
            put_string(&mut map, text);
        }
        // Elements: names and values. map8 holds up to 255 bytes.
        let elements = count.saturating_mul(2);
        match (
            u8::try_from(map.len().saturating_add(1)),
            u8::try_from(elements),
        ) {
            (Ok(size), Ok(elements)) => head.extend_from_slice(&[0xc1, size, elements]),
            _ => {
                head.push(0xd1);
                put_u32(&mut head, map.len().saturating_add(4));
                put_u32(&mut head, elements);
            }
        }
        head.extend_from_slice(&map);
    }
    head.extend_from_slice(&[0x00, 0x53, DATA as u8]);
    match u8::try_from(value.len()) {
        Ok(len) => head.extend_from_slice(&[0xa0, len]),
        Err(_) => {
            head.push(0xb0);
            put_u32(&mut head, value.len());
        }
    }
    Encoded {
        head,
        value,
        filter: None,
    }
}

/// A string (UTF-8): str8 up to 255 bytes, str32 beyond.
fn put_string(into: &mut Vec<u8>, text: &str) {
    match u8::try_from(text.len()) {
        Ok(len) => into.extend_from_slice(&[0xa1, len]),
        Err(_) => {
            into.push(0xb1);
            put_u32(into, text.len());
        }
    }
    into.extend_from_slice(text.as_bytes());
}

/// A length or count as AMQP's 32-bit field: record sizes are bounded by
/// partlog's limits far below 4 GiB.
fn put_u32(into: &mut Vec<u8>, value: usize) {
    let value = u32::try_from(value).unwrap_or(u32::MAX);
    into.extend_from_slice(&value.to_be_bytes());
}

/// Decodes `message` (one record's bytes, a slice of its chunk).
pub fn decode(message: &Bytes) -> Result<Decoded, NotAmqp> {
    let mut decoded = Decoded::default();
    let mut data: Vec<Bytes> = Vec::new();
    let mut at = 0;
    if message.is_empty() {
        return Err(NotAmqp("an empty message has no sections"));
    }
    while at < message.len() {
        let mut cursor = Cursor::new(message, at);
        if cursor.u8()? != 0x00 {
            return Err(NotAmqp("a section is not a described value"));
        }
        let code = cursor.descriptor()?;
        if !(FIRST_SECTION..=LAST_SECTION).contains(&code) {
            return Err(NotAmqp("unknown message section"));
        }
        let value_at = cursor.at;
        match code {
            DATA => data.push(cursor.binary()?),
            AMQP_VALUE => {
                if let Some(body) = cursor.string_or_binary()? {
                    data.push(body);
                } else {
                    cursor.at = value_at;
                    cursor.skip()?;
                }
            }
            APPLICATION_PROPERTIES => cursor.properties(&mut decoded.properties)?,
            _ => cursor.skip()?,
        }
        at = cursor.at;
    }
    decoded.value = match data.as_slice() {
        [] => Bytes::new(),
        [one] => one.clone(),
        _ => data.concat().into(),
    };
    Ok(decoded)
}

/// A position in a message.
struct Cursor<'a> {
    bytes: &'a Bytes,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a Bytes, at: usize) -> Self {
        Cursor { bytes, at }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], NotAmqp> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(NotAmqp("a value runs past the end of the message"))?;
        let taken = self
            .bytes
            .get(self.at..end)
            .ok_or(NotAmqp("a value runs past the end of the message"))?;
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], NotAmqp> {
        self.take(N)?
            .try_into()
            .map_err(|_| NotAmqp("a value runs past the end of the message"))
    }

    fn slice(&mut self, n: usize) -> Result<Bytes, NotAmqp> {
        let start = self.at;
        self.take(n)?;
        Ok(self.bytes.slice(start..self.at))
    }

    fn u8(&mut self) -> Result<u8, NotAmqp> {
        let [byte] = self.array()?;
        Ok(byte)
    }

    fn u32(&mut self) -> Result<u32, NotAmqp> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// The next byte, not taken.
    fn peek(&self) -> Result<u8, NotAmqp> {
        self.bytes
            .get(self.at)
            .copied()
            .ok_or(NotAmqp("a value runs past the end of the message"))
    }

    /// A length or count of `width` bytes (1 or 4).
    fn size(&mut self, width: usize) -> Result<usize, NotAmqp> {
        Ok(match width {
            1 => usize::from(self.u8()?),
            _ => self.u32()? as usize,
        })
    }

    /// A section's descriptor: a ulong code, or its symbolic name.
    fn descriptor(&mut self) -> Result<u64, NotAmqp> {
        match self.u8()? {
            0x53 => Ok(u64::from(self.u8()?)),
            0x80 => Ok(u64::from_be_bytes(self.array()?)),
            0x44 => Ok(0),
            code @ (0xa3 | 0xb3) => {
                let n = self.size(if code == 0xa3 { 1 } else { 4 })?;
                let name = self.take(n)?;
                Ok(match name {
                    b"amqp:header:list" => 0x70,
                    b"amqp:delivery-annotations:map" => 0x71,
                    b"amqp:message-annotations:map" => 0x72,
                    b"amqp:properties:list" => 0x73,
                    b"amqp:application-properties:map" => 0x74,
                    b"amqp:data:binary" => 0x75,
                    b"amqp:amqp-sequence:list" => 0x76,
                    b"amqp:amqp-value:*" => 0x77,
                    b"amqp:footer:map" => 0x78,
                    _ => return Err(NotAmqp("unknown section descriptor")),
                })
            }
            _ => Err(NotAmqp("a section descriptor is not a ulong or symbol")),
        }
    }

    /// A binary value.
    fn binary(&mut self) -> Result<Bytes, NotAmqp> {
        match self.u8()? {
            0xa0 => {
                let n = self.size(1)?;
                self.slice(n)
            }
            0xb0 => {
                let n = self.size(4)?;
                self.slice(n)
            }
            _ => Err(NotAmqp("a data section does not hold binary")),
        }
    }

    /// A string's or a binary's bytes; `None` (nothing read) for any other
    /// type.
    fn string_or_binary(&mut self) -> Result<Option<Bytes>, NotAmqp> {
        let width = match self.peek()? {
            0xa0 | 0xa1 => 1,
            0xb0 | 0xb1 => 4,
            _ => return Ok(None),
        };
        self.u8()?;
        let n = self.size(width)?;
        self.slice(n).map(Some)
    }

    /// Skips one value of any type.
    fn skip(&mut self) -> Result<(), NotAmqp> {
        self.skip_nested(0)
    }

    fn skip_nested(&mut self, depth: usize) -> Result<(), NotAmqp> {
        if depth > MAX_NESTING {
            return Err(NotAmqp("values nest too deeply"));
        }
        let constructor = self.u8()?;
        if constructor == 0x00 {
            let inner = depth.saturating_add(1);
            self.skip_nested(inner)?; // the descriptor
            return self.skip_nested(inner);
        }
        match fixed_width(constructor) {
            Some(n) => {
                self.take(n)?;
                Ok(())
            }
            None => match constructor {
                0xa0..=0xaf | 0xc0 | 0xc1 | 0xe0 => {
                    let n = self.size(1)?;
                    self.take(n).map(drop)
                }
                0xb0..=0xbf | 0xd0 | 0xd1 | 0xf0 => {
                    let n = self.size(4)?;
                    self.take(n).map(drop)
                }
                _ => Err(NotAmqp("unknown type constructor")),
            },
        }
    }

    /// The application properties map, as text.
    fn properties(&mut self, into: &mut BTreeMap<String, String>) -> Result<(), NotAmqp> {
        let width = match self.u8()? {
            0xc1 => 1,
            0xd1 => 4,
            0x40 => return Ok(()), // null: no properties
            _ => return Err(NotAmqp("application properties are not a map")),
        };
        let size = self.size(width)?;
        let end = self
            .at
            .checked_add(size)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(NotAmqp("a map runs past the end of the message"))?;
        let count = self.size(width)?;
        if count % 2 != 0 {
            return Err(NotAmqp("a map has an odd number of elements"));
        }
        for _ in 0..count / 2 {
            let name = self.text()?;
            let value = self.text()?;
            if let (Some(name), Some(value)) = (name, value) {
                into.insert(name, value);
            }
        }
        if self.at != end {
            return Err(NotAmqp("a map's size does not match its elements"));
        }
        Ok(())
    }

    /// A simple value as text; `None` (skipped) for compound and described
    /// values.
    fn text(&mut self) -> Result<Option<String>, NotAmqp> {
        let start = self.at;
        let constructor = self.u8()?;
        let text = match constructor {
            0x40 => String::new(),
            0x41 => "true".into(),
            0x42 => "false".into(),
            0x43 | 0x44 => "0".into(),
            0x56 => (self.u8()? != 0).to_string(),
            0x50 | 0x52 | 0x53 => self.u8()?.to_string(),
            0x51 | 0x54 | 0x55 => i8::from_be_bytes(self.array()?).to_string(),
            0x60 => u16::from_be_bytes(self.array()?).to_string(),
            0x61 => i16::from_be_bytes(self.array()?).to_string(),
            0x70 => u32::from_be_bytes(self.array()?).to_string(),
            0x71 => i32::from_be_bytes(self.array()?).to_string(),
            0x72 => f32::from_be_bytes(self.array()?).to_string(),
            0x73 => {
                let code = u32::from_be_bytes(self.array()?);
                char::from_u32(code).map_or_else(String::new, String::from)
            }
            0x80 => u64::from_be_bytes(self.array()?).to_string(),
            0x81 => i64::from_be_bytes(self.array()?).to_string(),
            0x82 => f64::from_be_bytes(self.array()?).to_string(),
            0x83 => timestamp_text(i64::from_be_bytes(self.array()?)),
            // decimal32, decimal64, decimal128
            0x74 => hex(&self.array::<4>()?),
            0x84 => hex(&self.array::<8>()?),
            0x94 => hex(&self.array::<16>()?),
            0x98 => uuid_text(self.array()?),
            0xa1 | 0xa3 | 0xb1 | 0xb3 => {
                let n = self.size(if constructor < 0xb0 { 1 } else { 4 })?;
                String::from_utf8_lossy(self.take(n)?).into_owned()
            }
            0xa0 | 0xb0 => {
                let n = self.size(if constructor == 0xa0 { 1 } else { 4 })?;
                hex(self.take(n)?)
            }
            _ => {
                self.at = start;
                self.skip()?;
                return Ok(None);
            }
        };
        Ok(Some(text))
    }
}

/// Values nested deeper than this are refused (a hostile message must not
/// exhaust the stack).
const MAX_NESTING: usize = 64;

/// Bytes after the constructor of a fixed-width type; `None` for variable
/// and compound types.
fn fixed_width(constructor: u8) -> Option<usize> {
    Some(match constructor {
        0x40..=0x45 => 0,
        0x50..=0x56 => 1,
        0x60 | 0x61 => 2,
        0x70..=0x74 => 4,
        0x80..=0x84 => 8,
        0x94 | 0x98 => 16,
        _ => return None,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn uuid_text(bytes: [u8; 16]) -> String {
    let [a0, a1, a2, a3, b0, b1, c0, c1, d0, d1, e0, e1, e2, e3, e4, e5] = bytes;
    format!(
        "{}-{}-{}-{}-{}",
        hex(&[a0, a1, a2, a3]),
        hex(&[b0, b1]),
        hex(&[c0, c1]),
        hex(&[d0, d1]),
        hex(&[e0, e1, e2, e3, e4, e5])
    )
}

/// RFC 3339 for the years humantime formats (1970..=9999), else the
/// milliseconds as a number.
fn timestamp_text(ms: i64) -> String {
    const YEAR_10000_MS: i64 = 253_402_300_800_000;
    if !(0..YEAR_10000_MS).contains(&ms) {
        return ms.to_string();
    }
    let since_epoch = std::time::Duration::from_millis(ms.unsigned_abs());
    match std::time::UNIX_EPOCH.checked_add(since_epoch) {
        Some(time) => humantime::format_rfc3339_millis(time).to_string(),
        None => ms.to_string(),
    }
}
