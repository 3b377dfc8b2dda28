//! `ListStreams`: the virtual host's streams in name order, a page at a
//! time.
//!
//! The broker lists its super streams (through its management API); a
//! page is the next `page_size` names after the page token that start with
//! the prefix and that the caller may see. The token is the last name of
//! the page before, encoded: a page goes on after that name whatever was
//! created or deleted meanwhile, so no stream is listed twice, and one
//! created meanwhile is listed when its name comes after the token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::broker::Broker;
use crate::error::{Error, Kind, Reason, Result};

/// Streams per page when the request names no size.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Most streams per page.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// What a client asks `ListStreams` for.
#[derive(Debug, Clone, Default)]
pub struct ListStreams {
    pub prefix: String,
    /// 0 asks for the default.
    pub page_size: u32,
    /// Empty for the first page.
    pub page_token: String,
}

/// One page of streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPage {
    pub streams: Vec<StreamSummary>,
    /// `None` after the last page.
    pub next_page_token: Option<String>,
}

/// A stream as the listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    pub stream: String,
    pub partitions: u32,
}

/// Marks partlog's tokens, so that another string is refused, not taken
/// for a name.
const TOKEN_PREFIX: &str = "after:";

impl ListStreams {
    /// The page size and the name the page goes on after, checked.
    fn checked(&self) -> Result<(usize, Option<String>)> {
        let size = match self.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => {
                return Err(Error::field(
                    Reason::ValueOutOfRange,
                    "page_size",
                    format!("page_size is {n}; at most {MAX_PAGE_SIZE} are allowed"),
                ))
            }
            n => n,
        };
        let after = if self.page_token.is_empty() {
            None
        } else {
            let refused = || {
                Error::field(
                    Reason::PageTokenInvalid,
                    "page_token",
                    "page_token is not a next_page_token of ListStreams; pass the one the \
                     previous page returned, or none for the first page",
                )
            };
            let bytes = URL_SAFE_NO_PAD
                .decode(&self.page_token)
                .map_err(|_| refused())?;
            let text = String::from_utf8(bytes).map_err(|_| refused())?;
            let name = text.strip_prefix(TOKEN_PREFIX).ok_or_else(refused)?;
            Some(name.to_owned())
        };
        Ok((size as usize, after))
    }
}

fn token_after(name: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{TOKEN_PREFIX}{name}"))
}

/// The names of one page: those of `names` after `after` that start with
/// `prefix` and are `visible`, in byte order, at most `size`; and the
/// token of the next page when more follow.
fn page(
    mut names: Vec<String>,
    prefix: &str,
    after: Option<&str>,
    size: usize,
    visible: &(dyn Fn(&str) -> bool + Sync),
) -> (Vec<String>, Option<String>) {
    names.sort_unstable();
    names.dedup();
    let mut listed = names
        .into_iter()
        .filter(|name| name.starts_with(prefix))
        .filter(|name| after.is_none_or(|after| name.as_str() > after))
        .filter(|name| visible(name));
    let page: Vec<String> = listed.by_ref().take(size).collect();
    let more = listed.next().is_some();
    let next = match page.last() {
        Some(last) if more => Some(token_after(last)),
        _ => None,
    };
    (page, next)
}

/// A page of the streams `request` asks for that `visible` lets the caller
/// see, with their partition counts.
pub async fn list(
    broker: &Broker,
    request: &ListStreams,
    visible: &(dyn Fn(&str) -> bool + Sync),
) -> Result<StreamPage> {
    let (size, after) = request.checked()?;
    let names = broker.super_stream_names().await?;
    let (names, next_page_token) = page(names, &request.prefix, after.as_deref(), size, visible);
    let mut streams = Vec::with_capacity(names.len());
    for name in names {
        match broker.super_stream(&name).await {
            Ok(stream) => streams.push(StreamSummary {
                partitions: stream.partitions.len() as u32,
                stream: name,
            }),
            // Deleted since the broker listed it.
            Err(e) if e.kind() == Kind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(StreamPage {
        streams,
        next_page_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn all(_: &str) -> bool {
        true
    }

    #[test]
    fn pages_go_on_after_the_last_name_in_byte_order() {
        let broker = names(&["orders", "audit", "orders-eu", "payments", "orders-us"]);
        let (first, next) = page(broker.clone(), "orders", None, 2, &all);
        assert_eq!(first, ["orders", "orders-eu"]);
        let request = ListStreams {
            page_token: next.clone().unwrap(),
            ..Default::default()
        };
        let (_, after) = request.checked().unwrap();
        assert_eq!(after.as_deref(), Some("orders-eu"));
        let (second, last) = page(broker.clone(), "orders", after.as_deref(), 2, &all);
        assert_eq!(second, ["orders-us"]);
        assert_eq!(last, None, "no token after the last page");
        let (exact, none) = page(broker, "", None, 5, &all);
        assert_eq!(exact.len(), 5);
        assert_eq!(none, None, "a full last page has no token either");
    }

    #[test]
    fn only_visible_streams_are_listed_and_counted() {
        let broker = names(&["a-1", "b-1", "a-2", "b-2", "a-3"]);
        let team_a = |name: &str| name.starts_with("a-");
        let (page_1, next) = page(broker.clone(), "", None, 2, &team_a);
        assert_eq!(page_1, ["a-1", "a-2"]);
        let after = ListStreams {
            page_token: next.unwrap(),
            ..Default::default()
        }
        .checked()
        .unwrap()
        .1;
        let (page_2, next) = page(broker, "", after.as_deref(), 2, &team_a);
        assert_eq!((page_2, next), (names(&["a-3"]), None));
    }

    #[test]
    fn page_sizes_and_tokens_are_checked() {
        let request = |page_size, page_token: &str| ListStreams {
            prefix: String::new(),
            page_size,
            page_token: page_token.into(),
        };
        assert_eq!(request(0, "").checked().unwrap().0, 100);
        assert_eq!(request(1000, "").checked().unwrap().0, 1000);
        let too_many = request(1001, "").checked().unwrap_err();
        assert!(too_many.to_string().contains("page_size is 1001"));
        for bad in ["orders", "!!!", &URL_SAFE_NO_PAD.encode("orders")] {
            let refused = request(0, bad).checked().unwrap_err();
            assert!(refused.kind() == Kind::InvalidArgument, "{bad}");
        }
    }
}
