//! The first steps of the inbound PDU pipeline: format and size limits, the event ID, the
//! signatures of every server that must have signed, and the content hash (an event whose
//! content does not match its hash is kept redacted, as the spec requires).

use std::collections::BTreeSet;

use ruma::canonical_json::CanonicalJsonObject;
use ruma::room_version_rules::{EventIdFormatVersion, RoomVersionRules};
use ruma::signatures::Verified;
use ruma::{OwnedEventId, OwnedServerName, OwnedServerSigningKeyId};
use serde_json::value::RawValue;

use super::keys::RemoteKeys;
use crate::room::pdu::Pdu;
use crate::room::remote::Incoming;

/// Parse a PDU and compute its event ID, without checking signatures: `(id, object)`.
pub fn parse_pdu(
    raw: &RawValue,
    rules: &RoomVersionRules,
) -> Result<(OwnedEventId, CanonicalJsonObject), String> {
    let mut obj: CanonicalJsonObject =
        serde_json::from_str(raw.get()).map_err(|e| format!("not a canonical JSON PDU: {e}"))?;
    // Unsigned data is not covered by signatures; nothing another server puts there is kept.
    obj.remove("unsigned");
    ruma::state_res::check_pdu_format(&obj, &rules.event_format)?;
    let event_id = match rules.event_id_format {
        EventIdFormatVersion::V1 => obj
            .get("event_id")
            .and_then(|v| v.as_str())
            .ok_or("PDU without event_id")
            .and_then(|s| OwnedEventId::try_from(s).map_err(|_| "invalid event_id"))
            .map_err(str::to_owned)?,
        _ => {
            obj.remove("event_id");
            let hash = ruma::signatures::reference_hash(&obj, rules)
                .map_err(|e| format!("cannot hash PDU: {e}"))?;
            OwnedEventId::try_from(format!("${hash}")).map_err(|e| e.to_string())?
        }
    };
    Ok((event_id, obj))
}

/// The (server, key ID) pairs whose keys verifying `obj` needs.
fn keys_needed(
    obj: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<Vec<(OwnedServerName, OwnedServerSigningKeyId)>, String> {
    let servers =
        ruma::signatures::required_server_signatures_to_verify_event(obj, &rules.signatures)
            .map_err(|e| e.to_string())?;
    let sigs = obj
        .get("signatures")
        .and_then(|s| s.as_object())
        .ok_or("PDU without signatures")?;
    let mut out = Vec::new();
    for server in servers {
        let Some(keys) = sigs.get(server.as_str()).and_then(|k| k.as_object()) else {
            return Err(format!("PDU not signed by {server}"));
        };
        for key_id in keys.keys() {
            if let Ok(k) = OwnedServerSigningKeyId::try_from(key_id.as_str()) {
                out.push((server.clone(), k));
            }
        }
    }
    Ok(out)
}

/// A PDU parsed with its event ID, or why it could not be.
pub type Parsed = Result<(OwnedEventId, CanonicalJsonObject), String>;

/// Verify a batch of PDUs of one room version: signatures checked with keys fetched once for
/// the whole batch. Each PDU gets its own result; one bad PDU never fails the others.
pub async fn verify_pdus(
    keys: &RemoteKeys,
    rules: &RoomVersionRules,
    raws: &[&RawValue],
) -> Vec<(Option<OwnedEventId>, Result<Incoming, String>)> {
    let (parsed, wanted) = parse_pdus(rules, raws);
    let key_map = keys.key_map_many(&wanted).await;
    check_pdus(&key_map, rules, parsed)
}

/// The first half of [`verify_pdus`]: each PDU parsed, and the keys verifying them needs.
pub fn parse_pdus(
    rules: &RoomVersionRules,
    raws: &[&RawValue],
) -> (
    Vec<Parsed>,
    BTreeSet<(OwnedServerName, OwnedServerSigningKeyId)>,
) {
    let parsed: Vec<Parsed> = raws.iter().map(|r| parse_pdu(r, rules)).collect();
    let mut wanted = BTreeSet::new();
    for (_, obj) in parsed.iter().flatten() {
        if let Ok(k) = keys_needed(obj, rules) {
            wanted.extend(k);
        }
    }
    (parsed, wanted)
}

/// The second half of [`verify_pdus`], once the keys are at hand.
pub fn check_pdus(
    key_map: &ruma::signatures::PublicKeyMap,
    rules: &RoomVersionRules,
    parsed: Vec<Parsed>,
) -> Vec<(Option<OwnedEventId>, Result<Incoming, String>)> {
    parsed
        .into_iter()
        .map(|p| match p {
            Err(e) => (None, Err(e)),
            Ok((id, obj)) => {
                let result = check_one(key_map, rules, id.clone(), obj);
                (Some(id), result)
            }
        })
        .collect()
}

fn check_one(
    key_map: &ruma::signatures::PublicKeyMap,
    rules: &RoomVersionRules,
    event_id: OwnedEventId,
    obj: CanonicalJsonObject,
) -> Result<Incoming, String> {
    keys_needed(&obj, rules)?;
    let obj = match ruma::signatures::verify_event(key_map, &obj, rules) {
        Ok(Verified::All) => obj,
        Ok(Verified::Signatures) => {
            tracing::info!(%event_id, "content hash mismatch: keeping the event redacted");
            ruma::canonical_json::redact(obj, &rules.redaction, None)
                .map_err(|e| format!("cannot redact: {e}"))?
        }
        Err(e) => return Err(format!("signature check failed: {e}")),
    };
    let json = serde_json::to_string(&obj).map_err(|e| e.to_string())?;
    let pdu = Pdu::parse(event_id.clone(), &json).map_err(|e| e.to_string())?;
    Ok(Incoming {
        event_id,
        json,
        pdu,
    })
}
