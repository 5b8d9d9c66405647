//! The gRPC codec of every `vnet.v1` service: prost encoding, with undecodable messages answered
//! as `INVALID_ARGUMENT`.
//!
//! tonic's own `ProstCodec` maps a protobuf decode error to `INTERNAL` (the gRPC status-code
//! guide reserves INTERNAL for broken invariants of the server, and a malformed request is the
//! caller's fault). Bytes a peer sends are untrusted input like any field, so a message that does
//! not parse is refused as an invalid argument, naming the message type. The same codec decodes
//! answers on the client side, where a garbled answer reads as the same code.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstEncoder};

/// Prost encoding, decode errors as `INVALID_ARGUMENT` (see the module docs).
#[derive(Debug, Clone)]
pub struct VnetCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for VnetCodec<T, U> {
    fn default() -> Self {
        VnetCodec { _pd: PhantomData }
    }
}

impl<T, U> Codec for VnetCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = VnetDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        VnetDecoder { _pd: PhantomData }
    }
}

/// Decodes `U`, refusing malformed bytes as `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct VnetDecoder<U> {
    _pd: PhantomData<U>,
}

impl<U: Message + Default> Decoder for VnetDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| {
            Status::invalid_argument(format!(
                "malformed {} message: {e}",
                std::any::type_name::<U>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("protobuf")
            ))
        })
    }
}
