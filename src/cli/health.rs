//! `partlog health`: whether a partlog serves, from its gRPC health service
//! — for container health checks and scripts.

use serde::Serialize;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::client::{self, Failure, Result};
use super::output::{Printer, Row};
use super::{Common, HealthArgs};

#[derive(Debug, Serialize)]
struct HealthRow {
    service: String,
    status: &'static str,
}

impl Row for HealthRow {
    const HEADER: &'static [&'static str] = &["SERVICE", "STATUS"];

    fn cells(&self) -> Vec<String> {
        vec![self.service.clone(), self.status.to_owned()]
    }
}

/// Prints the service's status; fails (exit 1) unless it is SERVING.
pub async fn run(args: HealthArgs, common: &Common) -> Result<()> {
    let (channel, token) = client::channel(common).await?;
    let mut health = HealthClient::with_interceptor(channel, token);
    let request = HealthCheckRequest {
        service: args.service.clone(),
    };
    let status = health.check(request).await?.into_inner().status();
    let row = HealthRow {
        service: args.service,
        status: status.as_str_name(),
    };
    Printer::new(common.json).rows(&[row])?;
    match status {
        ServingStatus::Serving => Ok(()),
        other => Err(Failure::Other(format!(
            "partlog is not serving ({})",
            other.as_str_name()
        ))),
    }
}
