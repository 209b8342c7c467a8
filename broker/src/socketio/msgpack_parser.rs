//! The `socket.io-msgpack-parser` format: every packet is one binary message
//! holding one MessagePack map `{type, data, nsp, id?}`, as notepack writes
//! the packet object. No attachments and no BINARY_* types: buffers are
//! `bin` values in place.
//!
//! The decoder reads with [`crate::msgpack::Reader`] (bounded: depth, UTF-8,
//! announced lengths) and checks the packet as strictly as the default
//! parser ([`super::packet`]). What the JavaScript client really sends is
//! accepted: extra keys (`options: {compress}`) are ignored, and notepack's
//! `undefined` (`d4 00 00`) for `data` or `id` counts as absent.

use super::packet::{build, Body, Packet, PacketError, PacketType};
use super::value::{is_undefined, SioValue};
use crate::msgpack::{as_str, as_uint, Item, Reader, Writer};

/// Decodes one binary message of the msgpack parser.
///
/// # Errors
///
/// [`PacketError::Msgpack`] for bytes that are not one well-formed map with
/// string keys (or repeat `type`, `data`, `nsp` or `id`),
/// [`PacketError::UnknownType`] for a `type` other than 0..4,
/// [`PacketError::InvalidNamespace`] for an `nsp` that is absent, not a
/// string, or invalid, [`PacketError::InvalidAckId`] for an `id` that is not
/// a non-negative integer, and the payload errors of the default parser.
pub fn decode(bytes: &[u8]) -> Result<Packet, PacketError> {
    use crate::msgpack::WireError;
    let mut r = Reader::new(bytes);
    let Item::Map(n) = r.item().map_err(PacketError::Msgpack)? else {
        return Err(PacketError::Msgpack(WireError::InvalidPayload(
            "not a map".to_owned(),
        )));
    };
    // type, data, nsp, id
    let mut fields: [Option<&[u8]>; 4] = [None; 4];
    for _ in 0..n {
        let key = match r.item().map_err(PacketError::Msgpack)? {
            Item::Str(s) => s,
            _ => {
                return Err(PacketError::Msgpack(WireError::InvalidPayload(
                    "map key is not a string".to_owned(),
                )))
            }
        };
        let value = r.value().map_err(|e| match e {
            WireError::TooDeep => PacketError::TooDeep,
            e => PacketError::Msgpack(e),
        })?;
        let slot = match key {
            "type" => fields.get_mut(0),
            "data" => fields.get_mut(1),
            "nsp" => fields.get_mut(2),
            "id" => fields.get_mut(3),
            _ => None,
        };
        if let Some(slot) = slot {
            if slot.replace(value).is_some() {
                return Err(PacketError::Msgpack(WireError::InvalidPayload(format!(
                    "repeated key `{key}`"
                ))));
            }
        }
    }
    r.finish().map_err(PacketError::Msgpack)?;
    let [kind, data, nsp, id] = fields;
    let kind = kind
        .and_then(as_uint)
        .and_then(PacketType::from_number)
        .filter(|k| !matches!(k, PacketType::BinaryEvent | PacketType::BinaryAck))
        .ok_or(PacketError::UnknownType)?;
    let nsp = nsp
        .and_then(as_str)
        .ok_or(PacketError::InvalidNamespace)?
        .to_owned();
    let id = match id {
        None => None,
        Some(raw) if is_undefined(raw) => None,
        Some(raw) => Some(as_uint(raw).ok_or(PacketError::InvalidAckId)?),
    };
    let data = match data {
        None => None,
        Some(raw) if is_undefined(raw) => None,
        Some(raw) => Some(SioValue::from_msgpack(raw).map_err(PacketError::Msgpack)?),
    };
    build(kind, nsp, id, data)
}

/// Encodes a packet for the msgpack parser: a map of `type`, `data` (left
/// out when there is none), `nsp`, and `id` (left out when there is none:
/// the client refuses a `nil` id). Buffers are `bin`.
pub fn encode(packet: &Packet) -> Vec<u8> {
    let (kind, id, has_data) = match &packet.body {
        Body::Connect(auth) => (PacketType::Connect, None, auth.is_some()),
        Body::Disconnect => (PacketType::Disconnect, None, false),
        Body::Event { id, .. } => (PacketType::Event, *id, true),
        Body::Ack { id, .. } => (PacketType::Ack, Some(*id), true),
        Body::ConnectError(_) => (PacketType::ConnectError, None, true),
    };
    let mut out = Writer::with_capacity(64);
    out.map(2 + usize::from(has_data) + usize::from(id.is_some()));
    out.str("type").uint(kind as u64);
    match &packet.body {
        Body::Connect(Some(auth)) => {
            out.str("data").map(auth.len());
            for (k, v) in auth {
                out.str(k);
                v.write_msgpack(&mut out);
            }
        }
        Body::Event { name, args, .. } => {
            out.str("data").array(args.len() + 1).str(name);
            args.iter().for_each(|v| v.write_msgpack(&mut out));
        }
        Body::Ack { args, .. } => {
            out.str("data").array(args.len());
            args.iter().for_each(|v| v.write_msgpack(&mut out));
        }
        Body::ConnectError(data) => {
            out.str("data");
            data.write_msgpack(&mut out);
        }
        Body::Connect(None) | Body::Disconnect => {}
    }
    out.str("nsp").str(&packet.nsp);
    if let Some(id) = id {
        out.str("id").uint(id);
    }
    out.into_vec()
}
