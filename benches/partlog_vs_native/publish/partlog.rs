//! partlog's `Publish` and `PublishStream` as publishing paths.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use partlog::proto::part_log_client::PartLogClient;
use partlog::proto::{PublishRecord, PublishRequest, PublishResult, PublishStreamRequest, Source};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;

use super::{Confirmed, PublishPath, Target};
use crate::records::Record;
use crate::setup::Result;

/// `clients` paths making `Publish` calls, each on its own channel.
pub async fn unary_paths(target: &Target<'_>, clients: usize) -> Result<Vec<Box<dyn PublishPath>>> {
    let mut paths: Vec<Box<dyn PublishPath>> = Vec::new();
    for _ in 0..clients {
        paths.push(Box::new(PartlogUnary {
            client: target.partlog.client().await?,
            stream: target.stream.to_owned(),
        }));
    }
    Ok(paths)
}

/// One `PublishStream` call.
pub async fn stream_path(target: &Target<'_>) -> Result<Box<dyn PublishPath>> {
    Ok(Box::new(
        PartlogStream::open(target.partlog.client().await?, target.stream).await?,
    ))
}

fn proto_records(batch: Vec<Record>) -> Vec<PublishRecord> {
    batch
        .into_iter()
        .map(|r| PublishRecord {
            key: r.key,
            value: r.value.into(),
            ..Default::default()
        })
        .collect()
}

/// Every record of a partlog answer stored, once.
fn check_results(sent: usize, results: &[PublishResult]) -> Result<u64> {
    if results.len() != sent {
        return Err(format!("{} results for {sent} records", results.len()).into());
    }
    if let Some(failed) = results.iter().find(|r| r.error.is_some() || r.duplicate) {
        return Err(format!("a record was not stored: {failed:?}").into());
    }
    Ok(sent as u64)
}

struct PartlogUnary {
    client: PartLogClient<Channel>,
    stream: String,
}

impl PublishPath for PartlogUnary {
    fn submit(&mut self, batch: Vec<Record>) -> BoxFuture<'_, Result<Confirmed>> {
        let request = PublishRequest {
            stream: self.stream.clone(),
            records: proto_records(batch),
            producer_id: String::new(),
            ..Default::default()
        };
        let mut client = self.client.clone();
        let confirmed = async move {
            let sent = request.records.len();
            let answer = client.publish(request).await?.into_inner();
            check_results(sent, &answer.results)
        };
        futures::future::ready(Ok(confirmed.boxed())).boxed()
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        futures::future::ready(()).boxed()
    }
}

/// Batches sent on a `PublishStream` call and not answered yet, oldest
/// first: their record counts and where their answer goes.
type Waiting = Arc<Mutex<VecDeque<(usize, oneshot::Sender<Result<u64>>)>>>;

/// One `PublishStream` call: answers come in batch order, so each answer
/// settles the oldest batch waiting.
pub struct PartlogStream {
    stream: String,
    requests: Option<mpsc::UnboundedSender<PublishStreamRequest>>,
    waiting: Waiting,
    answers: tokio::task::JoinHandle<()>,
}

impl PartlogStream {
    pub async fn open(mut client: PartLogClient<Channel>, stream: &str) -> Result<PartlogStream> {
        let (requests, outgoing) = mpsc::unbounded_channel();
        let waiting = Waiting::default();
        let answers = tokio::spawn({
            let waiting = waiting.clone();
            async move {
                let outgoing = tokio_stream::wrappers::UnboundedReceiverStream::new(outgoing);
                let failure = match client.publish_stream(outgoing).await {
                    Ok(response) => {
                        let mut answers = response.into_inner();
                        loop {
                            match answers.message().await {
                                Ok(Some(answer)) => {
                                    let next = waiting.lock().unwrap().pop_front();
                                    let Some((sent, settle)) = next else {
                                        break "an answer for no batch".to_owned();
                                    };
                                    let _ = settle.send(check_results(sent, &answer.results));
                                }
                                Ok(None) => break "the call ended".to_owned(),
                                Err(status) => break format!("the call failed: {status}"),
                            }
                        }
                    }
                    Err(status) => format!("the call failed: {status}"),
                };
                for (_, settle) in waiting.lock().unwrap().drain(..) {
                    let _ = settle.send(Err(format!("PublishStream: {failure}").into()));
                }
            }
        });
        Ok(PartlogStream {
            stream: stream.to_owned(),
            requests: Some(requests),
            waiting,
            answers,
        })
    }

    /// Sends one batch, with its `source` if any; resolves once every
    /// record was stored.
    pub fn send(&self, records: Vec<PublishRecord>, source: Option<Source>) -> Result<Confirmed> {
        let (settle, settled) = oneshot::channel();
        let request = PublishStreamRequest {
            stream: self.stream.clone(),
            records,
            producer_id: String::new(),
            source,
        };
        self.waiting
            .lock()
            .unwrap()
            .push_back((request.records.len(), settle));
        let sent = self
            .requests
            .as_ref()
            .map(|r| r.send(request).is_ok())
            .unwrap_or(false);
        if !sent {
            return Err("the PublishStream call is closed".into());
        }
        Ok(settled
            .map(|r| r.unwrap_or_else(|_| Err("PublishStream answer lost".into())))
            .boxed())
    }
}

impl PublishPath for PartlogStream {
    fn submit(&mut self, batch: Vec<Record>) -> BoxFuture<'_, Result<Confirmed>> {
        futures::future::ready(self.send(proto_records(batch), None)).boxed()
    }

    fn close(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        // Ending the request stream ends the call once every answer is in.
        self.requests.take();
        async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.answers).await;
            self.answers.abort();
        }
        .boxed()
    }
}
