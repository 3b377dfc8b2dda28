//! Authentication and authorization at the gRPC edge.
//!
//! - [`AuthLayer`] runs in front of every service, before any request
//!   reaches a handler: it leaves health open, lets reflection through when
//!   `auth.reflection = "open"`, and otherwise authenticates the call — a
//!   bearer token (`authorization: Bearer …`), or without one, with
//!   `auth.client_cert_principal`, the verified client certificate — and
//!   puts the [`Caller`] into the request's extensions. A call it cannot
//!   authenticate is answered UNAUTHENTICATED right there: nothing of it
//!   reaches partlog's core or the broker.
//! - [`authorize`] (and [`Caller::check`] for each message of a client
//!   stream) is the first thing every `partlog.v1.PartLog` handler does:
//!   it checks the permissions [`rpcs`] lists for the decoded request and
//!   answers PERMISSION_DENIED naming the permission and resource.
//!
//! - [`revocable`] keeps open calls under the current principals file:
//!   when it is reloaded, every open `Subscribe`, `Consume` and
//!   `PublishStream` is checked again — its credential against the new
//!   principals, what it reads or writes against the new grants — and one
//!   no longer allowed ends with UNAUTHENTICATED or PERMISSION_DENIED.
//!
//! UNAUTHENTICATED and PERMISSION_DENIED are produced here only; the core
//! never learns who calls.

pub mod certificate;
pub mod principals;
mod rate;
pub mod rpcs;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::watch;
use tonic::codegen::http;
use tonic::{Request, Status};

use super::audit;
use super::connections::ConnectionInfo;
use super::reload::Reload;
use crate::config::AuthConfig;
use crate::error::{Error, Reason};
use crate::server::convert::status;
use certificate::CertificateName;
use principals::{Principal, Principals};
use rate::Rates;
use rpcs::Protected;

/// Who makes a call, as the handlers see it.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Authentication is off (no `auth.tokens_file`): everything is allowed.
    Anyone,
    Principal(Authenticated),
}

/// An authenticated caller: the principal, as of the principals file when
/// the call was admitted, and how it proved who it is.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Arc<Principal>,
    /// The connection's peer, for the audit log.
    pub peer: Option<std::net::SocketAddr>,
    credential: Credential,
    authenticator: Arc<Authenticator>,
}

/// What a caller proved itself with: looked up again after a reload.
#[derive(Clone, PartialEq, Eq)]
enum Credential {
    /// The SHA-256 of its bearer token.
    Token([u8; 32]),
    /// The principal name its verified client certificate carries.
    Certificate(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Token(_) => f.write_str("Token(<redacted>)"),
            Credential::Certificate(name) => write!(f, "Certificate({name:?})"),
        }
    }
}

impl Caller {
    /// The authenticated principal's name; `None` when authentication is
    /// off.
    pub fn principal_name(&self) -> Option<&str> {
        match self {
            Caller::Anyone => None,
            Caller::Principal(caller) => Some(&caller.principal.name),
        }
    }

    /// When this caller's token expires, if ever.
    fn expiry(&self) -> Option<std::time::SystemTime> {
        match self {
            Caller::Principal(caller) if matches!(caller.credential, Credential::Token(_)) => {
                caller.principal.not_after()
            }
            _ => None,
        }
    }

    /// This caller under the principals file as it is now: its principal's
    /// current grants, or UNAUTHENTICATED when its credential no longer
    /// names a principal.
    pub fn current(&self) -> Result<Caller, Status> {
        let Caller::Principal(caller) = self else {
            return Ok(Caller::Anyone);
        };
        let principals = caller.authenticator.principals();
        let principal = match &caller.credential {
            Credential::Token(digest) => principals.by_token_sha256(digest),
            Credential::Certificate(name) => principals.by_name(name),
        };
        match principal {
            Some(principal) => {
                unexpired(&principal, &caller.credential).map_err(status)?;
                Ok(Caller::Principal(Authenticated {
                    principal,
                    ..caller.clone()
                }))
            }
            None => Err(status(Error::new(
                Reason::CredentialsRevoked,
                format!(
                    "the credentials of principal {:?} are no longer valid: the principals \
                     file was changed",
                    caller.principal.name
                ),
            ))),
        }
    }

    /// Whether this caller may see `stream` (its name in ListStreams):
    /// what DescribeStream needs of it.
    pub fn sees_stream(&self, stream: &str) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Principal(caller) => {
                let resource = principals::Resource::Stream(stream);
                rpcs::ANY_USE
                    .iter()
                    .any(|p| caller.principal.may(*p, &resource))
            }
        }
    }

    /// Whether this caller may see `group` of `stream` (its name in
    /// ListGroups): `describe` or `group` on it.
    pub fn sees_group(&self, stream: &str, group: &str) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Principal(caller) => {
                let resource = principals::Resource::Group { stream, group };
                rpcs::DESCRIBE
                    .iter()
                    .any(|p| caller.principal.may(*p, &resource))
            }
        }
    }

    /// Whether this caller may publish `bytes` (keys, values and headers)
    /// now: RESOURCE_EXHAUSTED beyond `auth.publish_bytes_per_second`.
    pub fn publishing(&self, bytes: u64) -> Result<(), Status> {
        match self {
            Caller::Anyone => Ok(()),
            Caller::Principal(caller) => caller
                .authenticator
                .rates
                .publish(&caller.principal.name, bytes),
        }
    }

    /// Whether this caller may send `message`; PERMISSION_DENIED names the
    /// first permission and resource missing.
    pub fn check(&self, message: &impl Protected) -> Result<(), Status> {
        let needs = message.needs();
        super::observe::record_target(&needs);
        let Caller::Principal(caller) = self else {
            return Ok(());
        };
        let principal = &caller.principal;
        for need in needs {
            if need
                .any_of
                .iter()
                .any(|p| principal.may(*p, &need.resource))
            {
                continue;
            }
            let permissions: Vec<_> = need.any_of.iter().map(|p| p.name()).collect();
            let permission = match permissions.as_slice() {
                [one] => format!("permission {one}"),
                many => format!("one of the permissions {}", many.join(", ")),
            };
            let why = format!(
                "principal {:?} lacks {permission} on {}",
                principal.name, need.resource
            );
            let denied = status(Error::new(Reason::PermissionDenied, why));
            audit::record(audit::Entry {
                action: "call denied",
                principal: Some(&principal.name),
                peer: caller.peer,
                resource: &need.resource.to_string(),
                outcome: Err(&denied),
            });
            return Err(denied);
        }
        Ok(())
    }
}

/// The caller the [`AuthLayer`] put into a request's extensions. Its absence
/// is a wiring bug, and refuses the call rather than allowing it.
pub fn caller(extensions: &tonic::Extensions) -> Result<Caller, Status> {
    extensions.get::<Caller>().cloned().ok_or_else(|| {
        status(Error::new(
            Reason::Internal,
            "no caller identity on the call: partlog's authentication layer is missing",
        ))
    })
}

/// Whether the caller of `request` may make it; the first line of every
/// unary (and server-streaming) handler. The caller, when it may.
pub fn authorize<T: Protected>(request: &Request<T>) -> Result<Caller, Status> {
    let caller = caller(request.extensions())?;
    caller.check(request.get_ref())?;
    Ok(caller)
}

/// The principals file and how calls prove who they are; reloadable. Open
/// calls watch it ([`revocable`]).
pub struct Authenticator {
    tokens_file: PathBuf,
    certificate_name: CertificateName,
    principals: watch::Sender<Arc<Principals>>,
    rates: Rates,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("tokens_file", &self.tokens_file)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// `None` when authentication is off. Errors name the file and the
    /// principal at fault.
    pub fn load(config: &AuthConfig) -> Result<Option<Authenticator>, String> {
        if !config.enabled() {
            return Ok(None);
        }
        let certificate_name = CertificateName::parse(&config.client_cert_principal)
            .expect("the configuration validated auth.client_cert_principal");
        let tokens_file = PathBuf::from(&config.tokens_file);
        let principals = read_principals(&tokens_file, certificate_name)?;
        Ok(Some(Authenticator {
            tokens_file,
            certificate_name,
            principals: watch::Sender::new(Arc::new(principals)),
            rates: Rates::new(config),
        }))
    }

    fn principals(&self) -> Arc<Principals> {
        self.principals.borrow().clone()
    }

    /// The caller a call's metadata and connection name, or why there is
    /// none: the message of its UNAUTHENTICATED status, which never repeats
    /// a token.
    pub fn authenticate(
        self: &Arc<Self>,
        headers: &http::HeaderMap,
        connection: Option<&ConnectionInfo>,
    ) -> Result<Authenticated, Error> {
        let (principal, credential) = self.principal(headers, connection)?;
        Ok(Authenticated {
            principal,
            peer: connection.and_then(|c| c.remote_addr),
            credential,
            authenticator: self.clone(),
        })
    }

    fn principal(
        &self,
        headers: &http::HeaderMap,
        connection: Option<&ConnectionInfo>,
    ) -> Result<(Arc<Principal>, Credential), Error> {
        let invalid = |why: String| Error::new(Reason::CredentialsInvalid, why);
        let principals = self.principals();
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            let token = bearer_token(value).map_err(invalid)?;
            if token.chars().count() < principals::MIN_TOKEN_LENGTH {
                return Err(invalid(format!(
                    "the bearer token is shorter than {} characters, which partlog refuses \
                     (partlog token new makes tokens)",
                    principals::MIN_TOKEN_LENGTH
                )));
            }
            let digest = principals::token_sha256(token);
            let principal = principals.by_token_sha256(&digest).ok_or_else(|| {
                invalid("the bearer token is not valid for this partlog".to_owned())
            })?;
            let credential = Credential::Token(digest);
            unexpired(&principal, &credential)?;
            return Ok((principal, credential));
        }
        let by_certificate = self.certificate_name != CertificateName::None;
        let leaf = connection
            .and_then(|c| c.peer_certificates.as_ref())
            .and_then(|chain| chain.first());
        match (by_certificate, leaf) {
            (true, Some(leaf)) => {
                let what = self.certificate_name.describe();
                let name = self.certificate_name.of(leaf).ok_or_else(|| {
                    invalid(format!(
                        "the client certificate has no {what} to name a principal by; send \
                         `authorization: Bearer <token>`"
                    ))
                })?;
                let principal = principals.by_name(&name).ok_or_else(|| {
                    invalid(format!(
                        "the client certificate's {what} {name:?} is not a principal of this \
                         partlog; send `authorization: Bearer <token>`"
                    ))
                })?;
                Ok((principal, Credential::Certificate(name)))
            }
            (true, None) => Err(Error::new(
                Reason::CredentialsMissing,
                "missing credentials: send `authorization: Bearer <token>` metadata, or a \
                 client certificate that names a principal",
            )),
            (false, _) => Err(Error::new(
                Reason::CredentialsMissing,
                "missing credentials: send `authorization: Bearer <token>` metadata",
            )),
        }
    }
}

/// `responses` of an open call that ends with UNAUTHENTICATED or
/// PERMISSION_DENIED as soon as a reload of the principals file takes its
/// caller's credential or the permissions `message` needs (what the call
/// reads or writes). Without authentication, `responses` as they are.
pub fn revocable<T, M>(
    caller: Caller,
    message: M,
    responses: Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>,
) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>
where
    T: Send + 'static,
    M: Protected + Send + 'static,
{
    let Caller::Principal(authenticated) = &caller else {
        return responses;
    };
    let mut changes = authenticated.authenticator.principals.subscribe();
    let revoked = async move {
        loop {
            // A token's expiry ends the call as a reload would.
            let expiry = caller.expiry();
            tokio::select! {
                changed = changes.changed() => if changed.is_err() {
                    // The authenticator is gone with the server.
                    return std::future::pending().await;
                },
                () = sleep_until_time(expiry) => {}
            }
            if let Err(status) = caller.current().and_then(|c| c.check(&message)) {
                if let Caller::Principal(revoked) = &caller {
                    audit::record(audit::Entry {
                        action: "open call revoked",
                        principal: Some(&revoked.principal.name),
                        peer: revoked.peer,
                        resource: "the call",
                        outcome: Err(&status),
                    });
                }
                return status;
            }
        }
    };
    Box::pin(Revocable {
        responses,
        revoked: Some(Box::pin(revoked)),
    })
}

/// Resolves at `at` (wall-clock time); never without one.
async fn sleep_until_time(at: Option<std::time::SystemTime>) {
    let Some(at) = at else {
        return std::future::pending().await;
    };
    let wait = at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
}

/// A call's responses until its revocation, which is the last.
struct Revocable<T> {
    responses: Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>,
    /// `None` once revoked.
    revoked: Option<Pin<Box<dyn Future<Output = Status> + Send>>>,
}

impl<T> Stream for Revocable<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(revoked) = this.revoked.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(status) = revoked.as_mut().poll(cx) {
            this.revoked = None;
            return Poll::Ready(Some(Err(status)));
        }
        this.responses.as_mut().poll_next(cx)
    }
}

/// The principals file, checked against how principals can authenticate.
fn read_principals(
    path: &std::path::Path,
    certificate_name: CertificateName,
) -> Result<Principals, String> {
    let principals = Principals::load(path)?;
    check_ways_in(&principals, path, certificate_name)?;
    Ok(principals)
}

/// Every principal has a way to authenticate.
fn check_ways_in(
    principals: &Principals,
    path: &std::path::Path,
    certificate_name: CertificateName,
) -> Result<(), String> {
    if certificate_name == CertificateName::None {
        if let Some(p) = principals.iter().find(|p| !p.has_token()) {
            return Err(format!(
                "auth.tokens_file {}: principal {:?} has no token_sha256, and \
                 auth.client_cert_principal = \"none\" gives it no other way in",
                path.display(),
                p.name
            ));
        }
    }
    Ok(())
}

/// UNAUTHENTICATED for a token whose principal's `not_after` passed.
fn unexpired(principal: &Principal, credential: &Credential) -> Result<(), Error> {
    let expired = matches!(credential, Credential::Token(_))
        && principal
            .not_after()
            .is_some_and(|at| at <= std::time::SystemTime::now());
    if expired {
        let at = principal.not_after().map(humantime::format_rfc3339_seconds);
        return Err(Error::new(
            Reason::CredentialsRevoked,
            format!(
                "the token of principal {:?} expired at {}",
                principal.name,
                at.map_or_else(String::new, |at| at.to_string())
            ),
        ));
    }
    Ok(())
}

/// The token of an `authorization: Bearer <token>` value.
fn bearer_token(value: &http::HeaderValue) -> Result<&str, String> {
    let value = value
        .to_str()
        .map_err(|_| "the authorization metadata is not ASCII text".to_owned())?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    // RFC 6750: the scheme is case-insensitive.
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(
            "the authorization metadata must be `Bearer <token>` (partlog knows no other scheme)"
                .into(),
        );
    }
    let token = token.trim();
    if token.is_empty() {
        return Err("the authorization metadata has an empty bearer token".into());
    }
    Ok(token)
}

impl Reload for Authenticator {
    fn what(&self) -> &'static str {
        "principals file"
    }

    fn files(&self) -> Vec<PathBuf> {
        vec![self.tokens_file.clone()]
    }

    fn reload(&self) -> Result<(), String> {
        let (principals, nobody) = Principals::reload(&self.tokens_file)?;
        check_ways_in(&principals, &self.tokens_file, self.certificate_name)?;
        if let Some(why) = nobody {
            tracing::warn!(
                file = %self.tokens_file.display(),
                "the principals file is reloaded and {why}: every call is refused and open \
                 calls end until it names principals again"
            );
        }
        crate::telemetry::keep_principals(principals.iter().map(|p| p.name.as_str()));
        // Open calls watching it check themselves again.
        self.principals.send_replace(Arc::new(principals));
        Ok(())
    }
}

/// Services that are not partlog's own.
const HEALTH: &str = "/grpc.health.v1.Health/";
const REFLECTION: &str = "/grpc.reflection.";

/// The tower layer in front of every service; see the module doc.
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Option<Arc<Authenticator>>,
    reflection_open: bool,
}

impl AuthLayer {
    pub fn new(authenticator: Option<Arc<Authenticator>>, config: &AuthConfig) -> AuthLayer {
        AuthLayer {
            authenticator,
            reflection_open: config.reflection == "open",
        }
    }

    /// The caller to put into the request (`None`: the service needs none),
    /// or the UNAUTHENTICATED answer.
    fn admit(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        connection: Option<&ConnectionInfo>,
    ) -> Result<Option<Caller>, Status> {
        if path.starts_with(HEALTH) {
            return Ok(None);
        }
        let Some(authenticator) = &self.authenticator else {
            return Ok(Some(Caller::Anyone));
        };
        if self.reflection_open && path.starts_with(REFLECTION) {
            return Ok(None);
        }
        match authenticator.authenticate(headers, connection) {
            Ok(caller) => {
                // The connection may stay past server.unauthenticated_timeout_ms.
                if let Some(connection) = connection {
                    connection.authenticated();
                }
                authenticator.rates.call(&caller.principal.name)?;
                tracing::Span::current().record("principal", caller.principal.name.as_str());
                crate::telemetry::principal_called(&caller.principal.name);
                Ok(Some(Caller::Principal(caller)))
            }
            Err(why) => {
                let refused = status(why);
                audit::record(audit::Entry {
                    action: "call refused",
                    principal: None,
                    peer: connection.and_then(|c| c.remote_addr),
                    resource: path,
                    outcome: Err(&refused),
                });
                Err(refused)
            }
        }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

/// [`AuthLayer`] around a service.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, ResBody> tower_service::Service<http::Request<B>> for AuthService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let admitted = self.layer.admit(
            request.uri().path(),
            request.headers(),
            request.extensions().get::<ConnectionInfo>(),
        );
        match admitted {
            Ok(caller) => {
                if let Some(caller) = caller {
                    request.extensions_mut().insert(caller);
                }
                // The service that was made ready is the one that is called.
                let ready = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, ready);
                Box::pin(inner.call(request))
            }
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tokens_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn authenticator(
        text: &str,
        client_cert_principal: &str,
    ) -> Result<Arc<Authenticator>, String> {
        let file = tokens_file(text);
        let config = AuthConfig {
            tokens_file: file.path().display().to_string(),
            client_cert_principal: client_cert_principal.into(),
            reflection: "authenticated".into(),
            ..AuthConfig::default()
        };
        Authenticator::load(&config).map(|a| Arc::new(a.unwrap()))
    }

    fn file_with(token: &str) -> String {
        format!(
            "[[principal]]\nname = \"reader\"\ntoken_sha256 = \"{}\"\n\
             [[principal.grant]]\npermissions = [\"read\"]\nstreams = [\"orders-*\"]\n",
            principals::token_sha256_hex(token)
        )
    }

    fn headers(authorization: Option<&str>) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn tokens_authenticate_and_failures_say_what_is_missing() {
        let auth = authenticator(&file_with("s3cret-token-0123456789"), "none").unwrap();
        let ok = auth
            .authenticate(&headers(Some("Bearer s3cret-token-0123456789")), None)
            .unwrap();
        assert_eq!(ok.principal.name, "reader");
        assert!(auth
            .authenticate(&headers(Some("bearer s3cret-token-0123456789")), None)
            .is_ok());

        let cases = [
            (None, "missing credentials"),
            (Some("Bearer wrong-s3cret-0123456789"), "not valid"),
            (
                Some("Basic s3cret-token-0123456789"),
                "must be `Bearer <token>`",
            ),
            (Some("Bearer "), "empty bearer token"),
            (Some("s3cret-token-0123456789"), "must be `Bearer <token>`"),
        ];
        for (value, expected) in cases {
            let err = auth.authenticate(&headers(value), None).unwrap_err();
            assert!(err.message().contains(expected), "{value:?}: {err}");
            assert!(!err.message().contains("s3cret"), "{err}");
            let reason = if value.is_none() {
                Reason::CredentialsMissing
            } else {
                Reason::CredentialsInvalid
            };
            assert_eq!(err.reason(), reason, "{value:?}");
        }
    }

    #[test]
    fn principals_need_a_way_in() {
        let no_token = "[[principal]]\nname = \"ops\"\n";
        let err = authenticator(no_token, "none").err().unwrap();
        assert!(err.contains("\"ops\" has no token_sha256"), "{err}");
        assert!(authenticator(no_token, "subject_cn").is_ok());
    }

    #[test]
    fn the_layer_leaves_health_open_and_reflection_as_configured() {
        let auth = authenticator(&file_with("t0ken-0123456789abcdef"), "none").unwrap();
        let mut config = AuthConfig::default();
        let layer = AuthLayer::new(Some(auth.clone()), &config);
        let none = headers(None);
        let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        let publish = "/partlog.v1.PartLog/Publish";
        assert!(matches!(
            layer.admit("/grpc.health.v1.Health/Check", &none, None),
            Ok(None)
        ));
        let err = layer.admit(reflection, &none, None).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let err = layer.admit(publish, &none, None).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(matches!(
            layer.admit(
                publish,
                &headers(Some("Bearer t0ken-0123456789abcdef")),
                None
            ),
            Ok(Some(Caller::Principal(_)))
        ));

        config.reflection = "open".into();
        let layer = AuthLayer::new(Some(auth), &config);
        assert!(matches!(layer.admit(reflection, &none, None), Ok(None)));
        assert!(layer.admit(publish, &none, None).is_err());

        let open = AuthLayer::new(None, &config);
        assert!(matches!(
            open.admit(publish, &none, None),
            Ok(Some(Caller::Anyone))
        ));
    }

    #[test]
    fn denials_name_the_permission_and_the_resource() {
        let auth = authenticator(&file_with("t0ken-0123456789abcdef"), "none").unwrap();
        let caller = Caller::Principal(
            auth.authenticate(&headers(Some("Bearer t0ken-0123456789abcdef")), None)
                .unwrap(),
        );
        let read = crate::proto::ReadRequest {
            stream: "orders-eu".into(),
            ..Default::default()
        };
        caller.check(&read).unwrap();
        let publish = crate::proto::PublishRequest {
            stream: "orders-eu".into(),
            ..Default::default()
        };
        let err = caller.check(&publish).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            err.message(),
            "principal \"reader\" lacks permission write on stream \"orders-eu\""
        );
        let describe = crate::proto::DescribeStreamRequest {
            stream: "payments".into(),
        };
        let err = caller.check(&describe).unwrap_err();
        assert_eq!(
            err.message(),
            "principal \"reader\" lacks one of the permissions read, write, admin on stream \
             \"payments\""
        );
        let commit = crate::proto::CommitRequest {
            stream: "orders-eu".into(),
            group: "billing".into(),
            ..Default::default()
        };
        let err = caller.check(&commit).unwrap_err();
        assert_eq!(
            err.message(),
            "principal \"reader\" lacks permission group on group \"billing\" of stream \
             \"orders-eu\""
        );
        Caller::Anyone.check(&commit).unwrap();
    }

    /// Issue 17: a reload reaches open calls — a removed principal's call
    /// ends UNAUTHENTICATED, a narrowed grant's PERMISSION_DENIED, and an
    /// unrelated change leaves it open.
    #[tokio::test]
    async fn a_reload_ends_the_open_calls_it_no_longer_allows() {
        type Call = Pin<Box<dyn Stream<Item = Result<(), Status>> + Send>>;
        async fn next(call: &mut Call) -> Option<Result<(), Status>> {
            let item = tokio::time::timeout(std::time::Duration::from_millis(200), call.next());
            item.await.ok().flatten()
        }
        use futures::StreamExt;
        let grant = |streams: &str| {
            format!(
                "[[principal]]\nname = \"reader\"\ntoken_sha256 = \"{}\"\n\
                 [[principal.grant]]\npermissions = [\"read\"]\nstreams = [\"{streams}\"]\n\
                 [[principal]]\nname = \"other\"\ntoken_sha256 = \"{}\"\n",
                principals::token_sha256_hex("reader-t0ken-0123456789"),
                principals::token_sha256_hex("other-t0ken-0123456789"),
            )
        };
        let file = tokens_file(&grant("orders-*"));
        let config = AuthConfig {
            tokens_file: file.path().display().to_string(),
            client_cert_principal: "none".into(),
            reflection: "authenticated".into(),
            ..AuthConfig::default()
        };
        let auth = Arc::new(Authenticator::load(&config).unwrap().unwrap());
        let reload = |text: &str| {
            std::fs::write(file.path(), text).unwrap();
            auth.reload().unwrap();
        };
        let caller = || {
            let who = auth.authenticate(&headers(Some("Bearer reader-t0ken-0123456789")), None);
            Caller::Principal(who.unwrap())
        };
        let read = || crate::proto::ReadRequest {
            stream: "orders-eu".into(),
            ..Default::default()
        };
        let open = |caller: Caller| -> Call {
            revocable(caller, read(), Box::pin(futures::stream::pending()))
        };

        let mut call = open(caller());
        reload(&(grant("orders-*") + "# a comment\n"));
        assert!(next(&mut call).await.is_none(), "still allowed: still open");
        reload(&grant("payments-*"));
        let status = next(&mut call).await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(
            next(&mut call).await.is_none(),
            "the revocation is the last"
        );

        reload(&grant("orders-*"));
        let mut call = open(caller());
        let without_reader = grant("orders-*").replace("reader-t0ken-0123456789", "x");
        let without_reader = without_reader.replace(
            &principals::token_sha256_hex("reader-t0ken-0123456789"),
            &principals::token_sha256_hex("rotated-t0ken-0123456789"),
        );
        reload(&without_reader);
        let status = next(&mut call).await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        assert!(
            !status.message().contains("t0ken-0123456789abcdef"),
            "{status:?}"
        );

        // Without authentication nothing is revoked.
        let mut call = open(Caller::Anyone);
        assert!(next(&mut call).await.is_none());
    }

    /// Issue 17: short tokens and expired ones are refused; a principals
    /// file emptied or deleted while partlog runs revokes everyone.
    #[tokio::test]
    async fn short_and_expired_tokens_are_refused_and_an_emptied_file_revokes_everyone() {
        let entry = |name: &str, token: &str, not_after: &str| {
            format!(
                "[[principal]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\n{not_after}\n",
                principals::token_sha256_hex(token)
            )
        };
        let file = tokens_file(
            &(entry("short", "short-t0ken", "")
                + &entry(
                    "past",
                    "past-t0ken-0123456789",
                    "not_after = \"2020-01-01T00:00:00Z\"",
                )
                + &entry(
                    "ok",
                    "ok-t0ken-0123456789",
                    "not_after = \"2999-01-01T00:00:00Z\"",
                )),
        );
        let config = AuthConfig {
            tokens_file: file.path().display().to_string(),
            ..AuthConfig::default()
        };
        let auth = Arc::new(Authenticator::load(&config).unwrap().unwrap());
        let with =
            |token: &str| auth.authenticate(&headers(Some(&format!("Bearer {token}"))), None);
        let err = with("short-t0ken").unwrap_err();
        assert!(
            err.message().contains("shorter than 16 characters"),
            "{err}"
        );
        let err = with("past-t0ken-0123456789").unwrap_err();
        assert!(
            err.message().contains("expired at 2020-01-01T00:00:00Z"),
            "{err}"
        );
        assert_eq!(err.reason(), Reason::CredentialsRevoked);
        let ok = Caller::Principal(with("ok-t0ken-0123456789").unwrap());

        let read = crate::proto::ReadRequest::default();
        let mut call = revocable(
            ok,
            read,
            Box::pin(futures::stream::pending::<Result<(), Status>>()),
        );
        std::fs::write(file.path(), "# nobody\n").unwrap();
        auth.reload().unwrap();
        let next = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            futures::StreamExt::next(&mut call),
        );
        let status = next.await.unwrap().unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(with("ok-t0ken-0123456789").is_err(), "nobody is left");

        std::fs::remove_file(file.path()).unwrap();
        auth.reload().unwrap();
        assert!(with("ok-t0ken-0123456789").is_err());
    }

    #[test]
    fn describe_sees_a_groups_offsets_and_name_without_joining_it() {
        let text = format!(
            "[[principal]]\nname = \"ops\"\ntoken_sha256 = \"{}\"\n\
             [[principal.grant]]\npermissions = [\"describe\"]\nstreams = [\"*\"]\n\
             groups = [\"billing\"]\n",
            principals::token_sha256_hex("ops-t0ken-0123456789")
        );
        let auth = authenticator(&text, "none").unwrap();
        let caller = Caller::Principal(
            auth.authenticate(&headers(Some("Bearer ops-t0ken-0123456789")), None)
                .unwrap(),
        );
        let offsets = |group: &str| crate::proto::GetOffsetsRequest {
            stream: "orders".into(),
            group: group.into(),
        };
        caller.check(&offsets("billing")).unwrap();
        let err = caller.check(&offsets("audit")).unwrap_err();
        assert_eq!(
            err.message(),
            "principal \"ops\" lacks one of the permissions describe, group on group \"audit\" \
             of stream \"orders\""
        );
        assert!(caller.sees_group("orders", "billing"));
        assert!(!caller.sees_group("orders", "audit"));
        let commit = crate::proto::CommitRequest {
            stream: "orders".into(),
            group: "billing".into(),
            ..Default::default()
        };
        assert!(caller.check(&commit).is_err(), "describe does not commit");
    }
}
