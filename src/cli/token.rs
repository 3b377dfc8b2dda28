//! `partlog token new|hash`: bearer tokens, and their entries for the
//! principals file (`auth.tokens_file`), which holds SHA-256 hashes only.

use std::io::BufRead;

use tokio_rustls::rustls::crypto::aws_lc_rs;

use super::client::{Failure, Result};
use super::TokenCommand;
use crate::server::auth::principals::{token_sha256_hex, MIN_TOKEN_LENGTH as MIN_TOKEN_CHARS};

/// Random bytes of a new token: 256 bits, beyond any guessing, which is
/// why a fast hash (SHA-256) protects them in the principals file.
const TOKEN_BYTES: usize = 32;

pub fn run(command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::New => {
            println!("{}", new_token()?);
            Ok(())
        }
        TokenCommand::Hash { name } => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| Failure::Other(format!("cannot read standard input: {e}")))?;
            println!("{}", entry(&name, line.trim_end_matches(['\n', '\r']))?);
            Ok(())
        }
    }
}

fn new_token() -> Result<String> {
    use base64::Engine;
    let mut bytes = [0u8; TOKEN_BYTES];
    aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| Failure::Other("the system's random source failed".into()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The `[[principal]]` entry for `token`, without grants (the comment
/// shows one).
fn entry(name: &str, token: &str) -> Result<String> {
    if token.chars().count() < MIN_TOKEN_CHARS {
        return Err(Failure::Usage(format!(
            "the token on standard input has fewer than {MIN_TOKEN_CHARS} characters; make \
             one with `partlog token new`"
        )));
    }
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(Failure::Usage(
            "--name must be non-empty, without control characters".into(),
        ));
    }
    let name = toml::Value::String(name.to_owned());
    Ok(format!(
        "[[principal]]\nname = {name}\ntoken_sha256 = \"{}\"\n\
         # What it may do, e.g.:\n\
         # [[principal.grant]]\n\
         # permissions = [\"read\", \"write\"]\n\
         # streams = [\"orders-*\"]",
        token_sha256_hex(token)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::auth::principals::Principals;

    #[test]
    fn new_tokens_are_long_and_differ() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
    }

    #[test]
    fn an_entry_is_a_valid_principals_file_that_finds_its_token() {
        let token = new_token().unwrap();
        let text = entry("billing \"eu\"", &token).unwrap();
        assert!(!text.contains(&token));
        let principals = Principals::parse(&text).unwrap();
        assert_eq!(principals.by_token(&token).unwrap().name, "billing \"eu\"");
        assert!(matches!(entry("x", "short"), Err(Failure::Usage(_))));
        assert!(matches!(entry("", &token), Err(Failure::Usage(_))));
    }
}
