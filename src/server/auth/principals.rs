//! The principals file (`auth.tokens_file`): who may call, how they prove
//! it, and what they may do.
//!
//! ```toml
//! [[principal]]
//! name = "billing"
//! # SHA-256 of the token, hex (`partlog token hash --name billing`)
//! token_sha256 = "…64 hex digits…"
//! # optional: the token is refused from then on
//! not_after = "2027-06-30T00:00:00Z"
//!
//! [[principal.grant]]
//! permissions = ["read", "group"]
//! streams = ["orders-*"]
//! groups = ["billing"]
//! ```
//!
//! A principal without `token_sha256` can only authenticate with a client
//! certificate (`auth.client_cert_principal`). Permissions hold on the
//! streams (and for `group` and `describe`, the groups) that a grant's
//! patterns match; grants add up. A pattern is a glob: `*` matches any run
//! of characters (none included), `?` one character, anything else itself.
//!
//! Tokens are at least [`MIN_TOKEN_LENGTH`] characters: a shorter bearer
//! token is refused before it is looked up, and the SHA-256 of the empty
//! token is refused in the file. (A hash does not tell how long its token
//! was: `partlog token new` makes tokens long enough, and `partlog token
//! hash` refuses short ones.)

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// CreateStream, DeleteStream, ResizeStream.
    Admin,
    /// Publish, PublishStream.
    Write,
    /// Read, Subscribe, GetOffsets, ListGroups.
    Read,
    /// Commit, ResetOffsets, and Subscribe in a group (with `read`), on the
    /// grant's groups; also what `describe` allows.
    Group,
    /// GetOffsets of the grant's groups, and their names in ListGroups:
    /// reading what groups did without being one (Kafka's DESCRIBE).
    Describe,
}

impl Permission {
    /// Held on groups (a grant's `groups`), not on streams.
    fn is_on_groups(self) -> bool {
        matches!(self, Permission::Group | Permission::Describe)
    }

    pub fn name(self) -> &'static str {
        match self {
            Permission::Admin => "admin",
            Permission::Write => "write",
            Permission::Read => "read",
            Permission::Group => "group",
            Permission::Describe => "describe",
        }
    }
}

/// What a permission is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    Stream(&'a str),
    /// A consumer group on a stream: both must match one grant.
    Group {
        stream: &'a str,
        group: &'a str,
    },
}

impl std::fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Stream(stream) => write!(f, "stream {stream:?}"),
            Resource::Group { stream, group } => write!(f, "group {group:?} of stream {stream:?}"),
        }
    }
}

/// A glob over names: `*` any run of characters, `?` one character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(Vec<char>);

impl Pattern {
    pub fn new(glob: &str) -> Pattern {
        Pattern(glob.chars().collect())
    }

    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        let pattern = &self.0;
        let (mut p, mut n) = (0, 0);
        // The last `*` seen and the name position it was tried at: on a
        // mismatch that `*` takes one more character (linear backtracking).
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            match pattern.get(p) {
                Some('*') => {
                    star = Some((p, n));
                    p += 1;
                }
                Some(&c) if c == '?' || c == name[n] => {
                    p += 1;
                    n += 1;
                }
                _ => match star {
                    Some((star_p, star_n)) => {
                        p = star_p + 1;
                        n = star_n + 1;
                        star = Some((star_p, star_n + 1));
                    }
                    None => return false,
                },
            }
        }
        pattern[p..].iter().all(|&c| c == '*')
    }
}

/// One grant: permissions on the streams (and groups) its patterns match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    permissions: Vec<Permission>,
    streams: Vec<Pattern>,
    groups: Vec<Pattern>,
}

impl Grant {
    fn allows(&self, permission: Permission, resource: &Resource) -> bool {
        let matches = |patterns: &[Pattern], name: &str| patterns.iter().any(|p| p.matches(name));
        self.permissions.contains(&permission)
            && match *resource {
                Resource::Stream(stream) => {
                    !permission.is_on_groups() && matches(&self.streams, stream)
                }
                Resource::Group { stream, group } => {
                    permission.is_on_groups()
                        && matches(&self.streams, stream)
                        && matches(&self.groups, group)
                }
            }
    }
}

/// Someone partlog knows: a name and what it may do.
#[derive(Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    token_sha256: Option<[u8; 32]>,
    /// After this its token is refused.
    not_after: Option<std::time::SystemTime>,
    grants: Vec<Grant>,
}

impl Principal {
    pub fn may(&self, permission: Permission, resource: &Resource) -> bool {
        self.grants.iter().any(|g| g.allows(permission, resource))
    }

    pub fn has_token(&self) -> bool {
        self.token_sha256.is_some()
    }

    /// When its token stops being accepted, if ever.
    pub fn not_after(&self) -> Option<std::time::SystemTime> {
        self.not_after
    }
}

/// The principals of one version of the file.
#[derive(Debug)]
pub struct Principals(Vec<Arc<Principal>>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    #[serde(default)]
    principal: Vec<PrincipalEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalEntry {
    name: String,
    token_sha256: Option<String>,
    /// RFC 3339.
    not_after: Option<String>,
    #[serde(default)]
    grant: Vec<GrantEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantEntry {
    permissions: Vec<Permission>,
    streams: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
}

/// Shortest token partlog accepts, in characters (`partlog token new`
/// makes 43: 256 random bits, base64url): a shorter one might be guessed
/// faster than SHA-256 slows anyone down.
pub const MIN_TOKEN_LENGTH: usize = 16;

/// The SHA-256 of a token.
pub fn token_sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The SHA-256 of a token in lowercase hex, as `token_sha256` holds it.
pub fn token_sha256_hex(token: &str) -> String {
    token_sha256(token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Principals {
    /// Reads and checks the file; errors name it, the principal and the
    /// key at fault, and never quote the file.
    pub fn load(path: &Path) -> Result<Principals, String> {
        let display = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("auth.tokens_file {display}: cannot read it: {e}"))?;
        Principals::parse(&text).map_err(|why| format!("auth.tokens_file {display}: {why}"))
    }

    /// The file as a reload reads it: deleted, or holding no principal, it
    /// means nobody — every call is refused, open calls end — instead of an
    /// error that would keep the previous principals. The second value
    /// says why nobody is left, if so.
    pub fn reload(path: &Path) -> Result<(Principals, Option<&'static str>), String> {
        let display = path.display();
        let text = match std::fs::read_to_string(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Principals::none(), Some("it was deleted")));
            }
            read => read.map_err(|e| format!("auth.tokens_file {display}: cannot read it: {e}"))?,
        };
        let entries = Principals::entries(&text)
            .map_err(|why| format!("auth.tokens_file {display}: {why}"))?;
        if entries.is_empty() {
            return Ok((Principals::none(), Some("it defines no [[principal]]")));
        }
        let principals = Principals::from_entries(entries)
            .map_err(|why| format!("auth.tokens_file {display}: {why}"))?;
        Ok((principals, None))
    }

    pub fn parse(text: &str) -> Result<Principals, String> {
        let entries = Principals::entries(text)?;
        if entries.is_empty() {
            return Err("defines no [[principal]]: nobody could call partlog".into());
        }
        Principals::from_entries(entries)
    }

    fn entries(text: &str) -> Result<Vec<PrincipalEntry>, String> {
        let file: FileFormat = toml::from_str(text).map_err(|e| {
            // toml's own rendering quotes the offending line, which may
            // hold a token pasted in the wrong place: say where, not what.
            let line = e
                .span()
                .map(|span| text[..span.start].matches('\n').count() + 1)
                .map_or(String::new(), |line| format!("line {line}: "));
            let hint = if e.message().contains("unknown field `token`") {
                "; store the token's SHA-256 as token_sha256 (partlog token hash), never the token"
            } else {
                ""
            };
            format!("{line}{}{hint}", e.message().trim_end())
        })?;
        Ok(file.principal)
    }

    /// Nobody: what a principals file that was emptied or deleted while
    /// partlog runs leaves (every call refused, open ones ended).
    pub fn none() -> Principals {
        Principals(Vec::new())
    }

    fn from_entries(entries: Vec<PrincipalEntry>) -> Result<Principals, String> {
        let mut principals: Vec<Arc<Principal>> = Vec::new();
        for entry in entries {
            let principal = entry.check()?;
            if let Some(twin) = principals.iter().find(|p| p.name == principal.name) {
                return Err(format!("principal {:?} is defined twice", twin.name));
            }
            let same_token = principals
                .iter()
                .find(|p| p.token_sha256.is_some() && p.token_sha256 == principal.token_sha256);
            if let Some(twin) = same_token {
                return Err(format!(
                    "principals {:?} and {:?} have the same token_sha256; give each its own token",
                    twin.name, principal.name
                ));
            }
            principals.push(Arc::new(principal));
        }
        Ok(Principals(principals))
    }

    /// The principal whose token this is.
    #[cfg(test)]
    pub fn by_token(&self, token: &str) -> Option<Arc<Principal>> {
        self.by_token_sha256(&token_sha256(token))
    }

    /// The principal whose token has this SHA-256. Every stored hash is
    /// compared, each in constant time, so timing tells nothing of which
    /// one (or whether any) matched.
    pub fn by_token_sha256(&self, digest: &[u8; 32]) -> Option<Arc<Principal>> {
        let mut found = None;
        for principal in &self.0 {
            if let Some(hash) = &principal.token_sha256 {
                if bool::from(hash.ct_eq(digest)) {
                    found = Some(principal.clone());
                }
            }
        }
        found
    }

    pub fn by_name(&self, name: &str) -> Option<Arc<Principal>> {
        self.0.iter().find(|p| p.name == name).cloned()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Principal> {
        self.0.iter().map(|p| p.as_ref())
    }
}

impl PrincipalEntry {
    fn check(self) -> Result<Principal, String> {
        let name = self.name;
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(format!(
                "principal name {name:?} must be non-empty, without control characters"
            ));
        }
        let token_sha256 = match self.token_sha256 {
            None => None,
            Some(hex) => Some(parse_sha256(&hex).ok_or_else(|| {
                format!(
                    "principal {name:?}: token_sha256 must be 64 hexadecimal digits, the \
                     SHA-256 of the token (partlog token hash)"
                )
            })?),
        };
        if token_sha256 == Some(token_sha256_of_nothing()) {
            return Err(format!(
                "principal {name:?}: token_sha256 is the SHA-256 of the empty token; make a \
                 token with `partlog token new`"
            ));
        }
        let not_after = match self.not_after {
            None => None,
            Some(at) => Some(humantime::parse_rfc3339_weak(&at).map_err(|e| {
                format!(
                    "principal {name:?}: not_after {at:?} is not an RFC 3339 time (like \
                     2027-06-30T00:00:00Z): {e}"
                )
            })?),
        };
        let grants = self
            .grant
            .into_iter()
            .enumerate()
            .map(|(i, grant)| {
                grant
                    .check()
                    .map_err(|why| format!("principal {name:?}, grant {}: {why}", i + 1))
            })
            .collect::<Result<_, _>>()?;
        Ok(Principal {
            name,
            token_sha256,
            not_after,
            grants,
        })
    }
}

impl GrantEntry {
    fn check(self) -> Result<Grant, String> {
        if self.permissions.is_empty() {
            return Err("permissions is empty (admin, write, read, group, describe)".into());
        }
        if self.streams.is_empty() {
            return Err("streams is empty; \"*\" means every stream".into());
        }
        let for_groups = self.permissions.iter().any(|p| p.is_on_groups());
        if for_groups && self.groups.is_empty() {
            return Err(
                "permissions group and describe need groups (patterns of group names)".into(),
            );
        }
        if !for_groups && !self.groups.is_empty() {
            return Err("groups is set but only permissions group and describe use it".into());
        }
        let patterns = |globs: Vec<String>, what: &str| {
            if globs.iter().any(String::is_empty) {
                return Err(format!("{what} holds an empty pattern"));
            }
            Ok(globs.iter().map(|g| Pattern::new(g)).collect())
        };
        Ok(Grant {
            permissions: self.permissions,
            streams: patterns(self.streams, "streams")?,
            groups: patterns(self.groups, "groups")?,
        })
    }
}

/// The SHA-256 of the empty string.
fn token_sha256_of_nothing() -> [u8; 32] {
    token_sha256("")
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut hash = [0; 32];
    for (byte, pair) in hash.iter_mut().zip(hex.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FILE: &str = r#"
[[principal]]
name = "billing"
token_sha256 = "TOKEN_A"

[[principal.grant]]
permissions = ["read", "group"]
streams = ["orders-*"]
groups = ["billing", "billing-?"]

[[principal]]
name = "ops"

[[principal.grant]]
permissions = ["admin", "write"]
streams = ["*"]

[[principal]]
name = "reader"
token_sha256 = "TOKEN_B"

[[principal.grant]]
permissions = ["read"]
streams = ["orders", "payments"]
"#;

    fn principals() -> Principals {
        let text = FILE
            .replace("TOKEN_A", &token_sha256_hex("token-a"))
            .replace("TOKEN_B", &token_sha256_hex("token-b").to_uppercase());
        Principals::parse(&text).unwrap()
    }

    #[test]
    fn globs_match_whole_names() {
        let cases = [
            ("orders-*", "orders-eu", true),
            ("orders-*", "orders-", true),
            ("orders-*", "orders", false),
            ("orders-*", "payments-orders-x", false),
            ("*", "", true),
            ("*", "anything", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "abcabc", true),
            ("a*b*c", "acb", false),
            ("?", "é", true),
            ("?", "ab", false),
            ("orders", "orders", true),
            ("orders", "orders2", false),
            ("*-dlq", "orders-dlq", true),
            ("**", "x", true),
        ];
        for (glob, name, expected) in cases {
            assert_eq!(
                Pattern::new(glob).matches(name),
                expected,
                "{glob} ~ {name}"
            );
        }
    }

    proptest! {
        #[test]
        fn a_glob_without_wildcards_matches_only_itself(name in "[a-z.-]{0,12}", other in "[a-z.-]{0,12}") {
            prop_assert!(Pattern::new(&name).matches(&name));
            prop_assert_eq!(Pattern::new(&name).matches(&other), name == other);
        }

        #[test]
        fn a_prefix_glob_matches_exactly_its_extensions(prefix in "[a-z-]{0,6}", name in "[a-z-]{0,10}") {
            let glob = format!("{prefix}*");
            prop_assert_eq!(Pattern::new(&glob).matches(&name), name.starts_with(&prefix));
        }
    }

    #[test]
    fn tokens_find_their_principal_and_nothing_else() {
        let principals = principals();
        assert_eq!(principals.by_token("token-a").unwrap().name, "billing");
        // Upper-case hex in the file works as well.
        assert_eq!(principals.by_token("token-b").unwrap().name, "reader");
        assert!(principals.by_token("token-c").is_none());
        assert!(principals.by_token("").is_none());
        assert!(!principals.by_name("ops").unwrap().has_token());
        assert_eq!(
            token_sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn permissions_hold_on_what_their_grant_matches() {
        let principals = principals();
        let billing = principals.by_name("billing").unwrap();
        let ops = principals.by_name("ops").unwrap();
        let reader = principals.by_name("reader").unwrap();
        let group = |stream, group| Resource::Group { stream, group };
        use Permission::*;
        use Resource::Stream;

        assert!(billing.may(Read, &Stream("orders-eu")));
        assert!(!billing.may(Read, &Stream("payments")));
        assert!(!billing.may(Write, &Stream("orders-eu")));
        assert!(billing.may(Group, &group("orders-eu", "billing")));
        assert!(billing.may(Group, &group("orders-eu", "billing-2")));
        assert!(!billing.may(Group, &group("orders-eu", "audit")));
        assert!(!billing.may(Group, &group("payments", "billing")));
        // A group permission is no stream permission, and the reverse.
        assert!(!billing.may(Group, &Stream("orders-eu")));
        assert!(!reader.may(Read, &group("orders", "billing")));

        assert!(ops.may(Admin, &Stream("anything")));
        assert!(ops.may(Write, &Stream("payments")));
        assert!(!ops.may(Read, &Stream("payments")));

        assert!(reader.may(Read, &Stream("payments")));
        assert!(!reader.may(Write, &Stream("payments")));
        assert!(!reader.may(Admin, &Stream("orders")));
    }

    #[test]
    fn bad_files_say_what_is_wrong_without_quoting_tokens() {
        let hash = token_sha256_hex("x");
        let cases = [
            ("", "no [[principal]]"),
            ("[[principal]]\nname = \"a\"\ntoken = \"plain-s3cret\"\n", "never the token"),
            ("[[principal]]\nname = \"\"\n", "non-empty"),
            ("[[principal]]\nname = \"a\"\ntoken_sha256 = \"abc\"\n", "64 hexadecimal"),
            (
                "[[principal]]\nname = \"a\"\n[[principal]]\nname = \"a\"\n",
                "defined twice",
            ),
            (
                &format!(
                    "[[principal]]\nname = \"a\"\ntoken_sha256 = \"{hash}\"\n\
                     [[principal]]\nname = \"b\"\ntoken_sha256 = \"{hash}\"\n"
                ),
                "the same token_sha256",
            ),
            (
                "[[principal]]\nname = \"a\"\n[[principal.grant]]\npermissions = [\"root\"]\nstreams = [\"*\"]\n",
                "line 4",
            ),
            (
                "[[principal]]\nname = \"a\"\n[[principal.grant]]\npermissions = []\nstreams = [\"*\"]\n",
                "grant 1: permissions is empty",
            ),
            (
                "[[principal]]\nname = \"a\"\n[[principal.grant]]\npermissions = [\"read\"]\nstreams = []\n",
                "streams is empty",
            ),
            (
                "[[principal]]\nname = \"a\"\n[[principal.grant]]\npermissions = [\"group\"]\nstreams = [\"*\"]\n",
                "need groups",
            ),
            (
                "[[principal]]\nname = \"a\"\n[[principal.grant]]\npermissions = [\"read\"]\nstreams = [\"*\"]\ngroups = [\"g\"]\n",
                "only permissions group and describe",
            ),
            (
                "[[principal]]\nname = \"a\"\n[[principal.grant]]\npermissions = [\"read\"]\nstreams = [\"\"]\n",
                "empty pattern",
            ),
        ];
        for (text, expected) in cases {
            let err = Principals::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}\n=> {err}");
            assert!(!err.contains("plain-s3cret"), "{err}");
        }
        let err = Principals::load(Path::new("/no/such/tokens.toml")).unwrap_err();
        assert!(
            err.contains("auth.tokens_file /no/such/tokens.toml"),
            "{err}"
        );
    }
}
