//! The scoring sidecar (`lookahead scorer`): a tonic gRPC `Scorer` service over a hot-reloadable
//! [`ScorerSlot`], with the standard `grpc.health.v1` service; and the router's client for it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::slot::ScorerSlot;

/// Generated from `proto/lookahead/scorer/v1/scorer.proto`.
pub mod pb {
    tonic::include_proto!("lookahead.scorer.v1");
}

/// Most prompts one `Score` call may carry.
pub const MAX_BATCH: usize = 256;
/// Longest prompt (bytes) a `Score` call may carry.
pub const MAX_PROMPT_BYTES: usize = 64 << 10;

/// The service.
#[derive(Debug, Clone)]
pub struct ScorerService {
    slot: Arc<ScorerSlot>,
}

impl ScorerService {
    pub fn new(slot: Arc<ScorerSlot>) -> Self {
        Self { slot }
    }
}

#[tonic::async_trait]
impl pb::scorer_server::Scorer for ScorerService {
    async fn score(
        &self,
        request: Request<pb::ScoreRequest>,
    ) -> Result<Response<pb::ScoreResponse>, Status> {
        let prompts = request.into_inner().prompts;
        if prompts.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_BATCH} prompts per call"
            )));
        }
        if prompts.iter().any(|p| p.len() > MAX_PROMPT_BYTES) {
            return Err(Status::invalid_argument(format!(
                "prompts are limited to {MAX_PROMPT_BYTES} bytes"
            )));
        }
        let (scorer, version) = self.slot.get();
        let scored = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
            let out = scorer.score_batch(&refs);
            (scorer, out)
        })
        .await
        .map_err(|e| Status::internal(format!("scorer panicked: {e}")))?;
        let (scorer, rows) = scored;
        let rows = rows.map_err(|e| match e {
            lookahead_model::ScoreError::Input(m) => Status::invalid_argument(m),
            other => Status::internal(other.to_string()),
        })?;
        Ok(Response::new(pb::ScoreResponse {
            models: scorer.models().to_vec(),
            scores: rows
                .into_iter()
                .map(|values| pb::ScoreVector { values })
                .collect(),
            artifact_version: version,
        }))
    }

    async fn info(
        &self,
        _request: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        let (scorer, version) = self.slot.get();
        Ok(Response::new(pb::InfoResponse {
            models: scorer.models().to_vec(),
            artifact_version: version,
            reloads: self.slot.reloads(),
        }))
    }
}

/// Serves the scorer and health services on `listener` until `shutdown` resolves (in-flight calls
/// finish first).
pub async fn serve_scorer(
    listener: TcpListener,
    slot: Arc<ScorerSlot>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<pb::scorer_server::ScorerServer<ScorerService>>()
        .await;
    let incoming = tokio_stream_from(listener);
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(pb::scorer_server::ScorerServer::new(ScorerService::new(
            slot,
        )))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Adapts a listener into the stream of connections tonic accepts.
fn tokio_stream_from(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        });
        Some((next, l))
    })
}

/// The router's client for the sidecar. Connects lazily and reconnects on its own, so a sidecar
/// that restarts is picked up without restarting the router.
#[derive(Debug, Clone)]
pub struct GrpcScorer {
    client: pb::scorer_client::ScorerClient<Channel>,
}

/// Why the sidecar did not answer.
#[derive(Debug, thiserror::Error)]
pub enum GrpcScoreError {
    #[error("invalid scorer address {0:?}")]
    Address(String),
    #[error("scorer call failed: {0}")]
    Call(#[from] Status),
    #[error("scorer answered no scores")]
    Empty,
}

impl GrpcScorer {
    /// `addr`: `http://127.0.0.1:50051` or `127.0.0.1:50051`.
    pub fn new(addr: &str, connect_timeout: Duration) -> Result<Self, GrpcScoreError> {
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|_| GrpcScoreError::Address(addr.to_string()))?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true);
        Ok(Self {
            client: pb::scorer_client::ScorerClient::new(endpoint.connect_lazy()),
        })
    }

    /// Scores one prompt: the pool and its score vector.
    pub async fn score_one(&self, prompt: &str) -> Result<(Vec<String>, Vec<f32>), GrpcScoreError> {
        let mut client = self.client.clone();
        let resp = client
            .score(pb::ScoreRequest {
                prompts: vec![prompt.to_string()],
            })
            .await?
            .into_inner();
        let row = resp
            .scores
            .into_iter()
            .next()
            .ok_or(GrpcScoreError::Empty)?;
        Ok((resp.models, row.values))
    }

    /// The sidecar's pool and artifact version.
    pub async fn info(&self) -> Result<pb::InfoResponse, GrpcScoreError> {
        let mut client = self.client.clone();
        Ok(client.info(pb::InfoRequest {}).await?.into_inner())
    }
}
