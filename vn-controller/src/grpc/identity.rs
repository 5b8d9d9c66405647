//! The caller's identity. This is the only place that reads it: when authentication arrives,
//! this function changes and nothing else.

use tonic::{Request, Status};
use vnet_proto::PROVIDER_METADATA_KEY;

use crate::core::model::ProviderId;

use super::validate::check_identifier;

/// The provider on whose behalf `req` is made, from the `x-vnet-provider` metadata.
pub fn provider<T>(req: &Request<T>) -> Result<ProviderId, Status> {
    let value = req.metadata().get(PROVIDER_METADATA_KEY).ok_or_else(|| {
        Status::unauthenticated(format!(
            "missing caller identity: set the {PROVIDER_METADATA_KEY} metadata"
        ))
    })?;
    let s = value.to_str().map_err(|_| {
        Status::unauthenticated(format!("{PROVIDER_METADATA_KEY} is not printable ASCII"))
    })?;
    check_identifier(s)
        .map_err(|why| Status::unauthenticated(format!("{PROVIDER_METADATA_KEY} {s:?}: {why}")))?;
    Ok(ProviderId(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_metadata_once() {
        let mut r = Request::new(());
        assert_eq!(
            provider(&r).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        r.metadata_mut()
            .insert(PROVIDER_METADATA_KEY, "red".parse().unwrap());
        assert_eq!(provider(&r).unwrap(), ProviderId("red".into()));
        r.metadata_mut()
            .insert(PROVIDER_METADATA_KEY, "Red Team".parse().unwrap());
        assert_eq!(
            provider(&r).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }
}
