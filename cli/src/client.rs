//! The connection to the controller: address, TLS, credential, and errors that say what to do.
//!
//! vnctl talks to the controller only through `vnet-proto`. The bearer token (from the config
//! file, see [`crate::config`]) and, for an admin acting for a provider, `x-vnet-as` travel as
//! request metadata on every call, added by one interceptor.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};
use vnet_proto::v1 as pb;
use vnet_proto::v1::admin_client::AdminClient;
use vnet_proto::v1::substrate_client::SubstrateClient;
use vnet_proto::v1::virtual_networks_client::VirtualNetworksClient;
use vnet_proto::{ACT_AS_METADATA_KEY, AUTHORIZATION_METADATA_KEY};

/// Default controller address (also `VNET_CONTROLLER`).
pub const DEFAULT_CONTROLLER: &str = "http://127.0.0.1:7000";

/// How long vnctl tries to open the connection before it reports the controller unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// With several controller replicas: how long to look for the leader (an election takes a
/// lease's time to live) before settling for a follower, which serves reads.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// The health service name whose status says whether a replica leads: only the leader serves
/// agents.
pub const LEADER_HEALTH_SERVICE: &str = "vnet.v1.AgentControl";

/// Where the controller is, how to prove who we are, and for whom we act (the global flags
/// and the config file's current context).
#[derive(Clone, Default)]
pub struct ControllerOpts {
    /// `--controller` / `VNET_CONTROLLER`, else the context's.
    pub controller: String,
    /// `--as` (alias `--provider`) / `VNET_PROVIDER`: the provider to act for.
    pub provider: Option<String>,
    /// The CA (PEM) that signed the controller's certificate (for `https://`).
    pub ca_pem: Option<Vec<u8>>,
    /// The bearer token.
    pub token: Option<String>,
}

impl std::fmt::Debug for ControllerOpts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerOpts")
            .field("controller", &self.controller)
            .field("provider", &self.provider)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// The controller could not be reached at all (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot reach the controller at {addr} ({reason}); is vn-controller running? \
     (address from --controller or VNET_CONTROLLER)"
)]
pub struct Unreachable {
    pub addr: String,
    pub reason: String,
}

/// Why a connection failed in a few words: the [`Unreachable`] reason alone (the caller says
/// which controller), or the whole error otherwise.
pub fn unreachable_reason(e: &anyhow::Error) -> String {
    match e.downcast_ref::<Unreachable>() {
        Some(u) => u.reason.clone(),
        None => format!("{e:#}"),
    }
}

/// Adds the credential and the acting-as provider to every request.
#[derive(Clone)]
pub struct ProviderHeader {
    token: Option<MetadataValue<Ascii>>,
    act_as: Option<MetadataValue<Ascii>>,
}

impl Interceptor for ProviderHeader {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.token {
            req.metadata_mut()
                .insert(AUTHORIZATION_METADATA_KEY, v.clone());
        }
        if let Some(v) = &self.act_as {
            req.metadata_mut().insert(ACT_AS_METADATA_KEY, v.clone());
        }
        Ok(req)
    }
}

pub type VnClient = VirtualNetworksClient<InterceptedService<Channel, ProviderHeader>>;
pub type SubstrateApi = SubstrateClient<InterceptedService<Channel, ProviderHeader>>;
pub type AdminApi = AdminClient<InterceptedService<Channel, ProviderHeader>>;

/// An open connection to the controller.
#[derive(Clone)]
pub struct Controller {
    channel: Channel,
    provider: Option<String>,
    token: Option<MetadataValue<Ascii>>,
    addr: String,
}

impl Controller {
    /// Connects (eagerly, so that an unreachable controller is reported before anything else).
    /// `opts.controller` may list several replicas, comma-separated: the leader is chosen (the
    /// one whose AgentControl health is SERVING); while none leads (an election), the search
    /// goes on for up to 10 s, then the first reachable replica serves (reads work there).
    pub async fn connect(opts: &ControllerOpts) -> anyhow::Result<Self> {
        let addrs = endpoints(&opts.controller);
        if addrs.len() <= 1 {
            return Self::connect_one(opts, &opts.controller).await;
        }
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        loop {
            let mut reachable = None;
            let mut last_err = None;
            for a in &addrs {
                match Self::connect_one(opts, a).await {
                    Ok(c) if c.leads().await => return Ok(c),
                    Ok(c) => {
                        reachable.get_or_insert(c);
                    }
                    Err(e) => last_err = Some(e),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return match (reachable, last_err) {
                    (Some(c), _) => Ok(c),
                    (None, Some(e)) => Err(e),
                    (None, None) => anyhow::bail!("no controller address given"),
                };
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether this replica leads (its agents' service is SERVING).
    pub async fn leads(&self) -> bool {
        use tonic_health::pb::health_check_response::ServingStatus;
        let mut h = tonic_health::pb::health_client::HealthClient::new(self.channel.clone());
        let req = tonic_health::pb::HealthCheckRequest {
            service: LEADER_HEALTH_SERVICE.into(),
        };
        matches!(
            tokio::time::timeout(CONNECT_TIMEOUT, h.check(req)).await,
            Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32
        )
    }

    async fn connect_one(opts: &ControllerOpts, controller: &str) -> anyhow::Result<Self> {
        let addr = normalize_addr(controller);
        let endpoint = Endpoint::from_shared(addr.clone()).map_err(|e| {
            anyhow::anyhow!(
                "invalid controller address {:?} ({e}); expected e.g. {DEFAULT_CONTROLLER}",
                controller
            )
        })?;
        let endpoint = if addr.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            match &opts.ca_pem {
                Some(ca) => tls = tls.ca_certificate(Certificate::from_pem(ca)),
                None => anyhow::bail!(
                    "{addr} is https but no CA is configured: set certificate-authority in \
                     the config file (--config / VNET_CONFIG)"
                ),
            }
            endpoint
                .tls_config(tls)
                .map_err(|e| anyhow::anyhow!("TLS configuration: {}", error_chain(&e)))?
        } else {
            endpoint
        };
        let token = match &opts.token {
            Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| {
                anyhow::anyhow!("the token in the config file is not printable ASCII")
            })?),
            None => None,
        };
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .connect()
            .await
            .map_err(|e| Unreachable {
                addr: addr.clone(),
                reason: error_chain(&e),
            })?;
        if let Some(p) = &opts.provider {
            check_provider(p)?;
        }
        Ok(Controller {
            channel,
            provider: opts.provider.clone(),
            token,
            addr,
        })
    }

    /// The address we connected to, for messages.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The provider we act for, if any.
    pub fn provider(&self) -> Option<&str> {
        self.provider.as_deref()
    }

    /// Uses `provider` when no `--provider` was given (e.g. from a spec's `provider:`).
    pub fn or_provider(mut self, provider: Option<&str>) -> anyhow::Result<Self> {
        if self.provider.is_none()
            && let Some(p) = provider
        {
            check_provider(p)?;
            self.provider = Some(p.to_owned());
        }
        Ok(self)
    }

    fn header(&self) -> ProviderHeader {
        ProviderHeader {
            token: self.token.clone(),
            act_as: self
                .provider
                .as_deref()
                .map(|p| p.parse().expect("checked in connect/or_provider")),
        }
    }

    /// The administrators' service.
    pub fn admin(&self) -> AdminApi {
        AdminClient::with_interceptor(self.channel.clone(), self.header())
    }

    /// The tenants' service.
    pub fn vns(&self) -> VnClient {
        VirtualNetworksClient::with_interceptor(self.channel.clone(), self.header())
    }

    /// The operators' service.
    pub fn substrate(&self) -> SubstrateApi {
        SubstrateClient::with_interceptor(self.channel.clone(), self.header())
    }

    /// The caller's VN `name` (`Get`); an error says `what` failed ("describe vn x").
    pub async fn vn(&self, name: &str, what: &str) -> anyhow::Result<pb::VirtualNetwork> {
        self.vns()
            .get(pb::GetVnRequest { name: name.into() })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| rpc_error(what, s))
    }

    /// Every registered host, as `Substrate.ListHosts` returns them.
    pub async fn hosts(&self) -> Result<Vec<pb::Host>, Status> {
        self.substrate()
            .list_hosts(pb::ListHostsRequest {})
            .await
            .map(|r| r.into_inner().hosts)
    }

    /// Every substrate link, as `Substrate.ListLinks` returns them.
    pub async fn links(&self) -> anyhow::Result<Vec<pb::SubstrateLink>> {
        self.substrate()
            .list_links(pb::ListLinksRequest {})
            .await
            .map(|r| r.into_inner().links)
            .map_err(|s| rpc_error("list links", s))
    }

    /// The events of the caller's VN `name` from now on (`Watch`).
    pub async fn watch_vn(&self, name: &str) -> anyhow::Result<tonic::Streaming<pb::VnEvent>> {
        self.vns()
            .watch(pb::WatchVnsRequest {
                name: name.into(),
                after_seq: 0,
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| rpc_error(&format!("watch vn {name}"), s))
    }

    /// Opens `Exec` with the requests `rx` sends; the call may take `timeout` (`None`: as long
    /// as the controller lets it). An error says `what` failed.
    pub async fn exec(
        &self,
        rx: tokio::sync::mpsc::Receiver<pb::ExecRequest>,
        timeout: Option<Duration>,
        what: &str,
    ) -> anyhow::Result<tonic::Streaming<pb::ExecResponse>> {
        let mut call = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        if let Some(t) = timeout {
            call.set_timeout(t);
        }
        self.vns()
            .exec(call)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| rpc_error(what, s))
    }

    /// The caller's VNs (`List`); an error says `what` failed ("list vns").
    pub async fn list_vns(&self, what: &str) -> anyhow::Result<Vec<pb::VirtualNetwork>> {
        self.vns()
            .list(pb::ListVnsRequest {})
            .await
            .map(|r| r.into_inner().vns)
            .map_err(|s| rpc_error(what, s))
    }
}

fn check_provider(p: &str) -> anyhow::Result<()> {
    if p.is_empty() || !p.chars().all(|c| c.is_ascii_graphic()) {
        anyhow::bail!("invalid provider name {p:?}: use printable ASCII without spaces");
    }
    Ok(())
}

/// Runs an async command body on a single-threaded runtime (vnctl does one thing at a time).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

/// Accepts `host:port` as well as a URL.
/// The addresses of a comma-separated list of controller replicas.
pub fn endpoints(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

pub fn normalize_addr(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

/// Flattens an error and its sources into one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// Turns a gRPC status into an error that names what was attempted and, where it helps, what to
/// do about it.
pub fn rpc_error(what: &str, status: Status) -> anyhow::Error {
    let code = status.code();
    let msg = status.message();
    let hint = match code {
        Code::Unauthenticated => {
            " (vnctl sends the token of the config file's current context: --config FILE or \
             VNET_CONFIG; an admin creates one with `vnctl admin credentials create`)"
        }
        Code::Unavailable if msg.is_empty() || msg.contains("transport") => {
            " (the controller went away; is vn-controller running?)"
        }
        _ if msg.contains("grpc-status header missing") => {
            " (the server at --controller does not speak gRPC: is it a vn-controller?)"
        }
        _ => "",
    };
    let kind = match code {
        Code::InvalidArgument => "invalid",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "not enough resources",
        Code::FailedPrecondition => "not possible now",
        Code::Unauthenticated => "no identity",
        Code::Unavailable => "unavailable",
        Code::DeadlineExceeded => "timed out",
        _ => "failed",
    };
    if msg.is_empty() {
        anyhow::anyhow!("{what}: {kind} ({code:?}){hint}")
    } else {
        anyhow::anyhow!("{what}: {kind}: {msg}{hint}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_without_scheme_get_http() {
        assert_eq!(normalize_addr("10.0.0.1:7000"), "http://10.0.0.1:7000");
        assert_eq!(normalize_addr("https://x:1"), "https://x:1");
    }

    #[test]
    fn status_messages_say_what_failed() {
        let e = rpc_error(
            "create vn red",
            Status::invalid_argument("links[0]: bandwidth must be > 0"),
        );
        assert_eq!(
            e.to_string(),
            "create vn red: invalid: links[0]: bandwidth must be > 0"
        );
        let e = rpc_error(
            "list vns",
            Status::unauthenticated("missing x-vnet-provider"),
        );
        assert!(e.to_string().contains("VNET_CONFIG"), "{e}");
    }

    #[test]
    fn bad_provider_names_are_refused() {
        assert!(check_provider("red").is_ok());
        assert!(check_provider("re d").is_err());
        assert!(check_provider("").is_err());
        assert!(check_provider("röd").is_err());
    }

    #[tokio::test]
    async fn unreachable_controller_names_the_address() {
        // Port 1 on loopback: nothing listens there.
        let opts = ControllerOpts {
            controller: "127.0.0.1:1".into(),
            ..Default::default()
        };
        let err = Controller::connect(&opts).await.err().expect("must fail");
        let u = err
            .downcast_ref::<Unreachable>()
            .expect("typed as Unreachable");
        assert_eq!(u.addr, "http://127.0.0.1:1");
        assert!(err.to_string().contains("http://127.0.0.1:1"));
        assert_eq!(crate::error::exit_code(&err), 2);
    }
}
