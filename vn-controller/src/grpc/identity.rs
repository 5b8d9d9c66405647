//! Who is calling: the one place that turns a request's credential into an identity.
//!
//! - Tenants and admins: `authorization: Bearer <token>`, checked against the controller's
//!   token hashes ([`crate::runtime::credentials`]). Nothing the caller writes in a field or a
//!   header names its identity; `x-vnet-as` only selects, for an admin, the provider it acts for
//!   (logged), and a provider may name only itself there.
//! - Hosts: the TLS client certificate of the connection, verified by the TLS layer against the
//!   operator's CA, whose URI SAN `spiffe://vnet/host/<id>` names the host. Only with
//!   `--insecure` (plain text, no certificates) is the hello's host id believed.

use tonic::{Request, Status};
use vnet_proto::{ACT_AS_METADATA_KEY, AUTHORIZATION_METADATA_KEY, HOST_URI_PREFIX};
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

use crate::core::model::ProviderId;
use crate::runtime::controller::Controller;
use crate::runtime::credentials::{Principal, Role};

use super::convert;
use super::validate::check_identifier;

/// The authenticated caller of a tenant or admin RPC.
pub fn caller<T>(ctl: &Controller, req: &Request<T>) -> Result<Principal, Status> {
    let value = req
        .metadata()
        .get(AUTHORIZATION_METADATA_KEY)
        .ok_or_else(|| {
            Status::unauthenticated(
                "no credential: send `authorization: Bearer <token>` (vnctl: a config file from \
             `vnctl admin credentials create`, see --config / VNET_CONFIG)",
            )
        })?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| Status::unauthenticated("authorization is not `Bearer <token>`"))?;
    ctl.credentials()
        .authenticate(token.trim(), convert::now_ms())
        .map_err(|why| Status::unauthenticated(format!("credential refused: {why}")))
}

/// The provider on whose behalf a VN operation is made: a provider's own name; for an admin,
/// the provider named in `x-vnet-as` (required, logged).
pub fn provider<T>(ctl: &Controller, req: &Request<T>) -> Result<ProviderId, Status> {
    let who = caller(ctl, req)?;
    let acting = act_as(req)?;
    match (who.role, acting) {
        (Role::Provider, None) => Ok(ProviderId(who.name)),
        (Role::Provider, Some(p)) if p == who.name => Ok(ProviderId(who.name)),
        (Role::Provider, Some(p)) => Err(Status::permission_denied(format!(
            "provider {} may not act for provider {p} (only an admin may, with --as)",
            who.name
        ))),
        (Role::Admin, Some(p)) => {
            tracing::info!(admin = %who.name, token = %who.token_id, acting_as = %p, "admin acts for a provider");
            Ok(ProviderId(p))
        }
        (Role::Admin, None) => Err(Status::invalid_argument(format!(
            "admin {} must name the provider it acts for: --as PROVIDER ({ACT_AS_METADATA_KEY})",
            who.name
        ))),
    }
}

/// Like [`provider`], but an admin without `--as` is allowed (`None`): substrate listings.
pub fn reader<T>(ctl: &Controller, req: &Request<T>) -> Result<Option<ProviderId>, Status> {
    let who = caller(ctl, req)?;
    if who.role == Role::Admin && act_as(req)?.is_none() {
        return Ok(None);
    }
    provider(ctl, req).map(Some)
}

/// The admin making an admin-only call.
pub fn admin<T>(ctl: &Controller, req: &Request<T>) -> Result<Principal, Status> {
    let who = caller(ctl, req)?;
    if who.role != Role::Admin {
        return Err(Status::permission_denied(format!(
            "{} {} may not do this: it needs the admin role",
            who.role, who.name
        )));
    }
    Ok(who)
}

fn act_as<T>(req: &Request<T>) -> Result<Option<String>, Status> {
    let Some(v) = req.metadata().get(ACT_AS_METADATA_KEY) else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .map_err(|_| Status::invalid_argument(format!("{ACT_AS_METADATA_KEY} is not ASCII")))?;
    check_identifier(s)
        .map_err(|why| Status::invalid_argument(format!("{ACT_AS_METADATA_KEY} {s:?}: {why}")))?;
    Ok(Some(s.to_string()))
}

/// The host named by the connection's client certificate; `None` only in `--insecure` mode,
/// where there are no certificates.
pub fn host<T>(ctl: &Controller, req: &Request<T>) -> Result<Option<String>, Status> {
    let certs = req.peer_certs();
    let leaf = certs.as_ref().and_then(|c| c.first());
    let Some(leaf) = leaf else {
        if ctl.insecure() {
            return Ok(None);
        }
        return Err(Status::unauthenticated(
            "AgentControl needs a host certificate (a TLS client certificate from the operator's CA)",
        ));
    };
    host_of_certificate(leaf.as_ref()).map(Some)
}

/// The host id in a DER certificate's URI SAN `spiffe://vnet/host/<id>` (exactly one).
pub fn host_of_certificate(der: &[u8]) -> Result<String, Status> {
    let bad = |m: String| Status::unauthenticated(format!("host certificate: {m}"));
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| bad(format!("cannot parse it ({e})")))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| bad(format!("bad subjectAltName ({e})")))?
        .ok_or_else(|| bad("no subjectAltName".into()))?;
    let ids: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => u.strip_prefix(HOST_URI_PREFIX),
            _ => None,
        })
        .collect();
    let [id] = ids.as_slice() else {
        return Err(bad(format!(
            "it must name exactly one host as URI {HOST_URI_PREFIX}<id>; it names {}",
            ids.len()
        )));
    };
    check_identifier(id).map_err(|why| bad(format!("host id {id:?}: {why}")))?;
    Ok((*id).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(uris: &[&str]) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::new(vec!["x".to_string()]).unwrap();
        for u in uris {
            p.subject_alt_names
                .push(rcgen::SanType::URI((*u).try_into().unwrap()));
        }
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_host_comes_from_the_uri_san() {
        assert_eq!(
            host_of_certificate(&cert(&["spiffe://vnet/host/h1"])).unwrap(),
            "h1"
        );
        for bad in [
            cert(&[]),
            cert(&["spiffe://vnet/host/h1", "spiffe://vnet/host/h2"]),
            cert(&["spiffe://other/host/h1"]),
            cert(&["spiffe://vnet/host/"]),
        ] {
            assert_eq!(
                host_of_certificate(&bad).unwrap_err().code(),
                tonic::Code::Unauthenticated
            );
        }
        assert!(host_of_certificate(b"not der").is_err());
    }
}
