//! The connection to the controller: address, provider identity, and errors that say what to do.
//!
//! vnctl talks to the controller only through `vnet-proto`. The provider travels as request
//! metadata (`x-vnet-provider`) on every call, added by one interceptor.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use vnet_proto::PROVIDER_METADATA_KEY;
use vnet_proto::v1::substrate_client::SubstrateClient;
use vnet_proto::v1::virtual_networks_client::VirtualNetworksClient;

/// Default controller address (also `VNET_CONTROLLER`).
pub const DEFAULT_CONTROLLER: &str = "http://127.0.0.1:7000";

/// How long vnctl tries to open the connection before it reports the controller unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the controller is and on whose behalf we speak (the global flags).
#[derive(Debug, Clone)]
pub struct ControllerOpts {
    /// `--controller` / `VNET_CONTROLLER`.
    pub controller: String,
    /// `--provider` / `VNET_PROVIDER`.
    pub provider: Option<String>,
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

/// Adds the provider identity to every request.
#[derive(Clone)]
pub struct ProviderHeader(Option<MetadataValue<Ascii>>);

impl Interceptor for ProviderHeader {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert(PROVIDER_METADATA_KEY, v.clone());
        }
        Ok(req)
    }
}

pub type VnClient = VirtualNetworksClient<InterceptedService<Channel, ProviderHeader>>;
pub type SubstrateApi = SubstrateClient<InterceptedService<Channel, ProviderHeader>>;

/// An open connection to the controller.
#[derive(Clone)]
pub struct Controller {
    channel: Channel,
    provider: Option<String>,
    addr: String,
}

impl Controller {
    /// Connects (eagerly, so that an unreachable controller is reported before anything else).
    pub async fn connect(opts: &ControllerOpts) -> anyhow::Result<Self> {
        let addr = normalize_addr(&opts.controller);
        let endpoint = Endpoint::from_shared(addr.clone()).map_err(|e| {
            anyhow::anyhow!(
                "invalid controller address {:?} ({e}); expected e.g. {DEFAULT_CONTROLLER}",
                opts.controller
            )
        })?;
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

    /// Fails with a message saying how to name a provider when none is known.
    pub fn require_provider(&self) -> anyhow::Result<&str> {
        self.provider.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "no provider given: pass --provider NAME or set VNET_PROVIDER \
                 (virtual networks belong to a provider)"
            )
        })
    }

    fn header(&self) -> ProviderHeader {
        ProviderHeader(
            self.provider
                .as_deref()
                .map(|p| p.parse().expect("checked in connect/or_provider")),
        )
    }

    /// The tenants' service.
    pub fn vns(&self) -> VnClient {
        VirtualNetworksClient::with_interceptor(self.channel.clone(), self.header())
    }

    /// The operators' service.
    pub fn substrate(&self) -> SubstrateApi {
        SubstrateClient::with_interceptor(self.channel.clone(), self.header())
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
        Code::Unauthenticated => " (pass --provider NAME or set VNET_PROVIDER)",
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
        assert!(e.to_string().contains("--provider"), "{e}");
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
            provider: None,
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
