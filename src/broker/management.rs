//! The broker's management HTTP API, for what the stream protocol cannot
//! do: list the super streams of the virtual host, the consumers of a
//! group on every connection, read a stream's arguments and bind a new
//! partition to a super stream's exchange.
//!
//! RabbitMQ's management plugin answers `GET /api/exchanges/{vhost}` with
//! every exchange and its arguments; a super stream is an exchange with
//! the argument `x-super-stream`. The stream management plugin
//! (`rabbitmq_stream_management`) answers `GET /api/stream/consumers/{vhost}`
//! with every stream subscription, its properties (a single active
//! consumer's group) and whether it is active. partlog asks with the broker user's
//! credentials (HTTP basic authentication; the user needs the
//! `management` tag or a higher one), over TLS verified with
//! `broker.tls.ca_file` for an `https` address. One connection per
//! question: these are operators' calls, not a hot path.
//!
//! Why HTTP for bindings: the stream protocol has no command that adds a
//! binding to an existing exchange, and an AMQP 0-9-1 client (lapin) would
//! be a second broker protocol stack and connection for one call, while
//! partlog already speaks to this API (ListStreams, DescribeGroup).

use std::collections::HashMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use super::connect::Connector;
use super::protocol::reader::MEMBER_PROPERTY;
use super::tls;
use crate::config::ManagementAddress;
use crate::error::{Error, Reason, Result};

/// One exchange of the listing: its name and whether it is a super stream.
#[derive(Deserialize)]
struct Exchange {
    name: String,
    #[serde(default)]
    arguments: serde_json::Map<String, serde_json::Value>,
}

impl Exchange {
    fn is_super_stream(&self) -> bool {
        self.arguments
            .get("x-super-stream")
            .is_some_and(|v| v.as_bool() == Some(true))
    }
}

/// The names of the super streams of the virtual host, in no order.
pub async fn super_streams(connector: &Connector) -> Result<Vec<String>> {
    let config = connector.config();
    let vhost = percent_encode(&config.vhost);
    let path = format!("/api/exchanges/{vhost}?columns=name,arguments");
    let not_found = format!("does not know virtual host {:?}", config.vhost);
    let exchanges: Vec<Exchange> =
        get_json(connector, &path, "the exchange listing", &not_found).await?;
    Ok(exchanges
        .into_iter()
        .filter(Exchange::is_super_stream)
        .map(|e| e.name)
        .collect())
}

/// A stream subscription as the stream management plugin lists it.
#[derive(Deserialize)]
struct Subscription {
    queue: QueueName,
    #[serde(default)]
    properties: std::collections::HashMap<String, String>,
    #[serde(default)]
    active: bool,
    #[serde(default)]
    connection_details: ConnectionDetails,
}

#[derive(Deserialize)]
struct QueueName {
    name: String,
}

/// Empty while the broker has no statistics of the connection yet.
#[derive(Deserialize, Default)]
struct ConnectionDetails {
    peer_host: Option<String>,
    peer_port: Option<u16>,
}

/// A consumer of a group on one partition stream, on any connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConsumer {
    pub partition_stream: String,
    /// partlog's name of the member (`host:port#n`); `None` for a consumer
    /// partlog did not make (a native client).
    pub member: Option<String>,
    /// The consumer's end of its broker connection, `host:port`; empty
    /// while the broker has no statistics of the connection yet.
    pub connection: String,
    /// Whether the broker made it the partition's active consumer.
    pub active: bool,
}

/// The consumers of `group` on the partitions of `super_stream`, on every
/// connection of the virtual host (other partlog instances' and native
/// clients' included), in no order.
pub async fn group_consumers(
    connector: &Connector,
    super_stream: &str,
    group: &str,
) -> Result<Vec<GroupConsumer>> {
    let config = connector.config();
    let path = format!("/api/stream/consumers/{}", percent_encode(&config.vhost));
    let not_found = format!(
        "does not list stream consumers of virtual host {:?}: is the \
         rabbitmq_stream_management plugin enabled?",
        config.vhost
    );
    let subscriptions: Vec<Subscription> =
        get_json(connector, &path, "the stream consumer listing", &not_found).await?;
    Ok(subscriptions
        .into_iter()
        .filter(|s| {
            s.properties.get("super-stream").map(String::as_str) == Some(super_stream)
                && s.properties.get("name").map(String::as_str) == Some(group)
        })
        .map(|mut s| GroupConsumer {
            partition_stream: s.queue.name,
            member: s.properties.remove(MEMBER_PROPERTY),
            connection: match s.connection_details {
                ConnectionDetails {
                    peer_host: Some(host),
                    peer_port: Some(port),
                } => format!("{host}:{port}"),
                _ => String::new(),
            },
            active: s.active,
        })
        .collect())
}

/// A stream's arguments as the stream protocol's create command takes
/// them (`max-age`, `max-length-bytes`, ..., without the queue type).
pub async fn stream_arguments(
    connector: &Connector,
    stream: &str,
) -> Result<HashMap<String, String>> {
    #[derive(Deserialize)]
    struct Queue {
        #[serde(default)]
        arguments: serde_json::Map<String, serde_json::Value>,
    }
    let config = connector.config();
    let path = format!(
        "/api/queues/{}/{}?columns=arguments",
        percent_encode(&config.vhost),
        percent_encode(stream)
    );
    let not_found = format!("does not know stream {stream:?}");
    let what = format!("the arguments of stream {stream:?}");
    let queue: Queue = get_json(connector, &path, &what, &not_found).await?;
    Ok(create_arguments(queue.arguments))
}

/// Queue arguments (`x-max-age`, ...) as stream create arguments.
fn create_arguments(
    arguments: serde_json::Map<String, serde_json::Value>,
) -> HashMap<String, String> {
    arguments
        .into_iter()
        .filter(|(name, _)| name != "x-queue-type")
        .map(|(name, value)| {
            let name = name.strip_prefix("x-").unwrap_or(&name).to_owned();
            let value = match value {
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            };
            (name, value)
        })
        .collect()
}

/// Binds partition stream `partition` to super stream `super_stream`'s
/// exchange in place `index` (binding key and `x-stream-partition-order`
/// `index`, as the broker binds the partitions it creates). Binding again
/// what is bound changes nothing.
pub async fn bind_partition(
    connector: &Connector,
    super_stream: &str,
    partition: &str,
    index: u32,
) -> Result<()> {
    let config = connector.config();
    let address = management_address(connector)?;
    let path = format!(
        "/api/bindings/{}/e/{}/q/{}",
        percent_encode(&config.vhost),
        percent_encode(super_stream),
        percent_encode(partition)
    );
    let body = serde_json::json!({
        "routing_key": index.to_string(),
        "arguments": { "x-stream-partition-order": index },
    });
    let not_found = format!("does not know stream {super_stream:?} or {partition:?}");
    connector
        .within(
            &format!("binding {partition:?} to {super_stream:?}"),
            request(
                connector,
                &address,
                Method::POST,
                &path,
                Some(Bytes::from(body.to_string())),
                &not_found,
            ),
        )
        .await??;
    Ok(())
}

/// `GET path` on the management API, its JSON answer read as a `T`;
/// `what` names the answer in messages, `not_found` what a 404 means.
async fn get_json<T: serde::de::DeserializeOwned>(
    connector: &Connector,
    path: &str,
    what: &str,
    not_found: &str,
) -> Result<T> {
    let address = management_address(connector)?;
    let body = connector
        .within(
            &format!("asking the management API for {what}"),
            request(connector, &address, Method::GET, path, None, not_found),
        )
        .await??;
    serde_json::from_slice(&body).map_err(|e| {
        Error::new(
            Reason::ManagementApiUnavailable,
            format!(
                "the management API at {} answered {what} with what is not one: {e}",
                shown(&address)
            ),
        )
    })
}

fn management_address(connector: &Connector) -> Result<ManagementAddress> {
    connector
        .config()
        .management()
        .map_err(|why| Error::new(Reason::ConfigurationInvalid, why))
}

/// `method path` (with a JSON `body`) on the management API; the body of
/// a 2xx answer. A 404 is told as the API `not_found` (what it lacks).
async fn request(
    connector: &Connector,
    address: &ManagementAddress,
    method: Method,
    path: &str,
    body: Option<Bytes>,
    not_found: &str,
) -> Result<Bytes> {
    let config = connector.config();
    let tls = match (address.https, connector.tls()?) {
        (false, _) => None,
        (true, Some(tls)) => Some(tls),
        (true, None) => {
            return Err(Error::new(
                Reason::ConfigurationInvalid,
                format!(
                    "broker.management_url is https ({}) but broker.tls is not enabled: partlog \
                 verifies the management API's certificate with broker.tls.ca_file",
                    shown(address)
                ),
            ))
        }
    };
    let stream = tls::connect(&address.host, address.port, tls.as_deref())
        .await
        .map_err(|e| {
            Error::new(
                Reason::ManagementApiUnavailable,
                format!(
                    "the broker's management API at {} does not answer ({}); is the \
                 rabbitmq_management plugin enabled? (broker.management_url)",
                    shown(address),
                    e.message()
                ),
            )
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unavailable(address, &e))?;
    tokio::spawn(async move {
        // Ends with the answer; its errors reach the request.
        let _ = connection.await;
    });
    let credentials = format!("{}:{}", config.user, config.password.expose());
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::HOST,
            format!("{}:{}", address.host, address.port),
        )
        .header(
            hyper::header::AUTHORIZATION,
            format!("Basic {}", base64_encode(credentials.as_bytes())),
        )
        .header(hyper::header::ACCEPT, "application/json")
        .body(Full::new(body.unwrap_or_default()))
        .map_err(|e| {
            Error::new(
                Reason::Internal,
                format!("building a management API request: {e}"),
            )
        })?;
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| unavailable(address, &e))?;
    let status = answer.status();
    let body = answer
        .into_body()
        .collect()
        .await
        .map_err(|e| unavailable(address, &e))?
        .to_bytes();
    match status {
        status if status.is_success() => Ok(body),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(Error::new(
            Reason::BrokerAccessRefused,
            format!(
            "the broker's management API at {} refuses user {:?} ({status}): the user needs the \
             management tag (rabbitmqctl set_user_tags {} management) and permissions on \
             virtual host {:?}",
            shown(address),
            config.user,
            config.user,
            config.vhost
        ),
        )),
        StatusCode::NOT_FOUND => Err(Error::new(
            Reason::ConfigurationInvalid,
            format!(
                "the broker's management API at {} {not_found}",
                shown(address)
            ),
        )),
        status => Err(Error::new(
            Reason::ManagementApiUnavailable,
            format!(
                "the broker's management API at {} answered {status}",
                shown(address)
            ),
        )),
    }
}

fn unavailable(address: &ManagementAddress, e: &hyper::Error) -> Error {
    Error::new(
        Reason::ManagementApiUnavailable,
        format!(
            "the broker's management API at {} failed: {e}",
            shown(address)
        ),
    )
}

/// The address as a URL, for messages.
fn shown(address: &ManagementAddress) -> String {
    let scheme = if address.https { "https" } else { "http" };
    format!("{scheme}://{}:{}", address.host, address.port)
}

/// A path segment: everything but unreserved characters percent-encoded
/// (the default virtual host "/" is `%2F`).
fn percent_encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_hosts_are_one_path_segment() {
        assert_eq!(percent_encode("/"), "%2F");
        assert_eq!(percent_encode("team a/b"), "team%20a%2Fb");
        assert_eq!(percent_encode("prod-1.x_y~"), "prod-1.x_y~");
    }

    #[test]
    fn queue_arguments_become_create_arguments() {
        let listed = r#"{"x-queue-type":"stream","x-max-age":"7D",
            "x-max-length-bytes":1000000,"x-queue-leader-locator":"balanced"}"#;
        let arguments = create_arguments(serde_json::from_str(listed).unwrap());
        assert_eq!(
            arguments,
            HashMap::from([
                ("max-age".to_string(), "7D".to_string()),
                ("max-length-bytes".to_string(), "1000000".to_string()),
                ("queue-leader-locator".to_string(), "balanced".to_string()),
            ])
        );
    }

    #[test]
    fn super_streams_are_the_exchanges_with_the_argument() {
        let listed = r#"[{"arguments":{},"name":""},
            {"arguments":{"x-super-stream":true},"name":"orders"},
            {"arguments":{"x-super-stream":false},"name":"odd"},
            {"name":"amq.direct"}]"#;
        let exchanges: Vec<Exchange> = serde_json::from_str(listed).unwrap();
        let names: Vec<&str> = exchanges
            .iter()
            .filter(|e| e.is_super_stream())
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(names, ["orders"]);
    }
}
