//! Principals files for tests of a partlog with authentication: tokens,
//! grants, and calls that carry a token.

use std::io::Write;

use tonic::metadata::MetadataValue;
use tonic::Request;

/// A new random token, long enough for partlog (at least 16 characters).
pub fn new_token() -> String {
    format!("tok-{:032x}", rand::random::<u128>())
}

/// The hex SHA-256 the principals file holds, computed here rather than
/// by partlog's own function.
pub fn token_sha256_hex(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One grant of a principal: permissions on streams (and groups).
pub fn grant(permissions: &[&str], streams: &[&str], groups: &[&str]) -> String {
    let list = |items: &[&str]| {
        items
            .iter()
            .map(|i| format!("{i:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut grant = format!(
        "[[principal.grant]]\npermissions = [{}]\nstreams = [{}]\n",
        list(permissions),
        list(streams)
    );
    if !groups.is_empty() {
        grant += &format!("groups = [{}]\n", list(groups));
    }
    grant
}

/// A principal's entry: its name, its token's hash, its grants.
pub fn principal(name: &str, token: &str, grants: &[String]) -> String {
    format!(
        "[[principal]]\nname = {name:?}\ntoken_sha256 = \"{}\"\n{}\n",
        token_sha256_hex(token),
        grants.concat()
    )
}

/// Everything on every stream and group.
pub fn everything() -> String {
    grant(&["admin", "write", "read", "group"], &["*"], &["*"])
}

/// A principals file that can be rewritten while partlog runs.
pub struct PrincipalsFile(tempfile::NamedTempFile);

impl PrincipalsFile {
    pub fn new(text: &str) -> PrincipalsFile {
        let mut file = tempfile::NamedTempFile::new().expect("principals file");
        file.write_all(text.as_bytes()).expect("write principals");
        PrincipalsFile(file)
    }

    pub fn path(&self) -> String {
        self.0.path().display().to_string()
    }

    /// Replaces the file's content (partlog notices on SIGHUP, or within
    /// its poll interval).
    pub fn rewrite(&self, text: &str) {
        std::fs::write(self.0.path(), text).expect("rewrite principals");
    }
}

/// `message` as a call with `authorization: Bearer <token>`.
pub fn as_principal<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    let value = MetadataValue::try_from(format!("Bearer {token}")).expect("ASCII token");
    request.metadata_mut().insert("authorization", value);
    request
}
