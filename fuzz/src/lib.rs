//! The bodies of the fuzz targets, one function per target, each feeding its input to the
//! functions production calls on the same input from the network. Shared by the cargo-fuzz
//! targets (`fuzz_targets/`) and by the corpus replay test of the main package
//! (`tests/fuzz_corpus.rs`, which includes this file as a module), so a saved input means the
//! same thing in both.
//!
//! A body returns quietly whatever production would answer (errors are expected); it panics
//! only when production would panic or when a property production relies on does not hold
//! (a value it writes does not read back, or the answer depends on how the network cut the
//! input into chunks).

use std::sync::OnceLock;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Method};
use ruma::api::client::filter::{FilterDefinition, create_filter};
use ruma::api::client::message::get_message_events;
use ruma::api::client::sync::sync_events;
use ruma::api::federation::authentication::XMatrix;
use ruma::api::federation::transactions::send_transaction_message;
use ruma::canonical_json::CanonicalJsonObject;
use ruma::room_version_rules::RoomVersionRules;
use ruma::signatures::{PublicKeyMap, PublicKeySet};
use ruma::{OwnedServerName, RoomVersionId, ServerName};
use serde_json::value::RawValue;
use trellis::keys::ServerKeys;
use trellis::media::thumbnail::{self, Fit};
use trellis::media::{multipart, remote};
use trellis::room::pdu::Pdu;
use trellis::sync::filter::SyncFilter;

/// A target's body.
pub type Body = fn(&[u8]);

/// Every target, by the name of its `fuzz_targets/` file and corpus directories.
pub const TARGETS: [(&str, Body); 7] = [
    ("x_matrix", x_matrix),
    ("pdu", pdu),
    ("tokens", tokens),
    ("filter", filter),
    ("send_transaction", send_transaction),
    ("media_multipart", media_multipart),
    ("image", image),
];

/// The server whose requests and events the seeds carry, signed with [`origin_keys`].
pub const ORIGIN: &str = "origin.example";
/// The server receiving them.
pub const OURS: &str = "trellis.example";
/// The request the X-Matrix seeds sign.
pub const X_MATRIX_URI: &str = "/_matrix/federation/v1/send/fuzz1";
/// The transaction ID of the `/send` seeds (the path's parameter).
pub const TXN_ID: &str = "fuzz1";
/// The room versions a PDU input may be read as: its first byte picks one.
pub const VERSIONS: [RoomVersionId; 12] = [
    RoomVersionId::V1,
    RoomVersionId::V2,
    RoomVersionId::V3,
    RoomVersionId::V4,
    RoomVersionId::V5,
    RoomVersionId::V6,
    RoomVersionId::V7,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

/// The origin's signing key: a fixed seed, so seeds signed with it once verify on every run.
pub fn origin_keys() -> &'static ServerKeys {
    static KEYS: OnceLock<ServerKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        ServerKeys::from_seed(name(ORIGIN), "fuzz", &[0x5e; 32]).expect("a fixed valid key")
    })
}

fn name(s: &str) -> OwnedServerName {
    OwnedServerName::try_from(s).expect("a fixed valid server name")
}

fn ours() -> &'static ServerName {
    static OURS_NAME: OnceLock<OwnedServerName> = OnceLock::new();
    OURS_NAME.get_or_init(|| name(OURS))
}

/// What the key cache would answer for `server`'s key `key_id`: the origin's public key,
/// whichever server and key was asked for (a changed name then fails on the signature).
fn key_map(server: &str, key_id: &str) -> PublicKeyMap {
    let set: PublicKeySet = [(key_id.to_owned(), origin_keys().public_key())].into();
    [(server.to_owned(), set)].into()
}

/// The origin's key, as the key cache holds it.
fn origin_key_map() -> PublicKeyMap {
    key_map(ORIGIN, origin_keys().key_id().as_str())
}

/// The head of a request as the router hands it on.
fn request(method: Method, uri: &str) -> http::request::Parts {
    http::Request::builder()
        .method(method)
        .uri(uri)
        .body(())
        .expect("a valid request head")
        .into_parts()
        .0
}

/// The first line and the rest.
fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

fn rules(version: &RoomVersionId) -> RoomVersionRules {
    version.rules().expect("a room version with rules")
}

/// The `Authorization` header of a signed federation request (first line) and the request's
/// body (the rest), through the header checks and the signature check of every signed
/// request.
pub fn x_matrix(data: &[u8]) {
    use trellis::http::auth::{read_x_matrix, verify_x_matrix};
    let (header, body) = split_line(data);
    let Ok(value) = HeaderValue::from_bytes(header) else {
        return; // the HTTP parser lets no such header through
    };
    let mut parts = request(Method::PUT, X_MATRIX_URI);
    parts.headers.insert(http::header::AUTHORIZATION, value);
    let Ok(x) = read_x_matrix(&parts.headers, ours()) else {
        return;
    };
    // Written out as we write our own requests' headers, it reads back the same.
    let again = XMatrix::parse(x.to_string()).expect("a written X-Matrix header parses");
    assert_eq!(
        (&again.origin, &again.destination, &again.key),
        (&x.origin, &x.destination, &x.key)
    );
    assert_eq!(again.sig.as_bytes(), x.sig.as_bytes());
    let keys = key_map(x.origin.as_str(), x.key.as_str());
    let _ = verify_x_matrix(&x, &parts, body, ours(), &keys);
}

/// A PDU as another server sends it: the first byte picks the room version, the rest is its
/// JSON. Parsed, its event ID computed (reference hash), signatures and content hash checked
/// (redacted on a mismatch), and read into what the auth rules see; the canonical JSON read
/// must write back unchanged, and an event that parses must still parse once redacted (a
/// later redaction of a stored event keeps it readable).
pub fn pdu(data: &[u8]) {
    use trellis::federation::pdu::{check_pdus, parse_pdus};
    let Some((&pick, json)) = data.split_first() else {
        return;
    };
    let rules = rules(&VERSIONS[usize::from(pick) % VERSIONS.len()]);
    let Ok(json) = std::str::from_utf8(json) else {
        return; // JSON text is UTF-8: a request body that is not is refused before this
    };
    let Ok(raw) = serde_json::from_str::<&RawValue>(json) else {
        return;
    };
    let (parsed, _wanted) = parse_pdus(&rules, &[raw]);
    if let Some(Ok((event_id, object))) = parsed.first() {
        let text = canonical_round_trip(object);
        if Pdu::parse(event_id.clone(), &text).is_ok()
            && let Ok(redacted) =
                ruma::canonical_json::redact(object.clone(), &rules.redaction, None)
        {
            let redacted = canonical_round_trip(&redacted);
            Pdu::parse(event_id.clone(), &redacted).expect("a redacted event parses");
        }
    }
    let checked = check_pdus(&origin_key_map(), &rules, parsed);
    for incoming in checked.into_iter().filter_map(|(_, c)| c.ok()) {
        let pdu = &incoming.pdu;
        let _ = (pdu.redacted_event(&rules), pdu.relation());
    }
}

/// Canonical JSON written out reads back as the same object and writes out the same text.
fn canonical_round_trip(object: &CanonicalJsonObject) -> String {
    let text = serde_json::to_string(object).expect("canonical JSON serializes");
    let back: CanonicalJsonObject =
        serde_json::from_str(&text).expect("written canonical JSON reads back");
    assert_eq!(&back, object);
    assert_eq!(serde_json::to_string(&back).ok().as_deref(), Some(&*text));
    text
}

/// A token a client or server hands back (sync `since`, pagination `from`, directory
/// `since`, search `next_batch`, sliding sync `pos`), through each parser; what parses writes
/// out as a token that parses to the same position.
pub fn tokens(data: &[u8]) {
    use trellis::room::directory::DirectoryToken;
    use trellis::room::search::Token as SearchToken;
    use trellis::room::timeline::TopoToken;
    use trellis::sync::sliding::conn::parse_pos;
    use trellis::sync::token::SyncToken;
    let Ok(s) = std::str::from_utf8(data) else {
        return; // query strings and JSON strings are UTF-8
    };
    if let Ok(t) = SyncToken::parse(s) {
        assert_eq!(SyncToken::parse(&t.to_string()).ok(), Some(t));
    }
    if let Ok(t) = TopoToken::parse(s) {
        assert_eq!(TopoToken::parse(&t.to_string()).ok(), Some(t));
    }
    if let Ok(t) = DirectoryToken::parse(s) {
        assert_eq!(DirectoryToken::parse(&t.to_string()).ok(), Some(t));
    }
    if let Ok(t) = SearchToken::parse(s) {
        assert_eq!(SearchToken::parse(&t.encode()).ok(), Some(t));
    }
    if let Ok(p) = parse_pos(s) {
        assert_eq!(parse_pos(&p.to_string()).ok(), Some(p));
    }
}

/// Filter JSON, where clients send it: an uploaded filter (`POST /user/{userId}/filter`,
/// which must read back once stored), an inline `/sync` filter and a `/messages` filter (both
/// in the query string); each then applied to a sync response or to events.
pub fn filter(data: &[u8]) {
    use trellis::http::ruma::parse_request;
    let user = "@alice:trellis.example";
    let parts = request(
        Method::POST,
        "/_matrix/client/v3/user/%40alice%3Atrellis.example/filter",
    );
    if let Ok(req) = parse_request::<create_filter::v3::Request>(parts, data, &[user.into()])
        && trellis::http::client::filter::validate(&req.filter).is_ok()
    {
        let stored = serde_json::to_string(&req.filter).expect("a filter serializes");
        let back: FilterDefinition =
            serde_json::from_str(&stored).expect("a stored filter reads back");
        apply_filter(&back);
    }

    let query: String = url::form_urlencoded::byte_serialize(data).collect();
    let parts = request(
        Method::GET,
        &format!("/_matrix/client/v3/sync?filter={query}"),
    );
    if let Ok(req) = parse_request::<sync_events::v3::Request>(parts, b"", &[])
        && let Some(sync_events::v3::Filter::FilterDefinition(f)) = &req.filter
        && trellis::sync::filter::check_bounds(f).is_ok()
    {
        apply_filter(f);
    }

    let room = "!room:trellis.example";
    let parts = request(
        Method::GET,
        &format!(
            "/_matrix/client/v3/rooms/%21room%3Atrellis.example/messages?dir=b&filter={query}"
        ),
    );
    if let Ok(req) = parse_request::<get_message_events::v3::Request>(parts, b"", &[room.into()]) {
        let f = trellis::room::timeline::EventFilter::from(&req.filter);
        for event in sample_events() {
            f.matches_value(&event);
        }
    }
}

fn apply_filter(f: &FilterDefinition) {
    use trellis::sync::{JoinedRoomSync, SyncResponse};
    let filter = SyncFilter::from(f);
    let _ = (filter.timeline_select(), filter.ignored_news());
    let room = ruma::OwnedRoomId::try_from("!room:trellis.example").expect("a valid room ID");
    let mut out = SyncResponse::default();
    out.join.insert(
        room,
        JoinedRoomSync {
            timeline: sample_events(),
            state: sample_events(),
            ephemeral: sample_events(),
            account_data: sample_events(),
            ..JoinedRoomSync::default()
        },
    );
    out.account_data = sample_events();
    out.presence = sample_events();
    filter.apply(&mut out);
    filter.apply_fields(&mut out);
}

fn sample_events() -> Vec<serde_json::Value> {
    use serde_json::json;
    vec![
        json!({"type": "m.room.message", "sender": "@alice:trellis.example", "event_id": "$a",
               "content": {"msgtype": "m.image", "body": "cat", "url": "mxc://trellis.example/a",
                           "m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}}}),
        json!({"type": "m.room.member", "sender": "@bob:origin.example", "state_key": "@bob:origin.example",
               "event_id": "$b", "content": {"membership": "join", "displayname": "Bob"}}),
        json!({"type": "m.typing", "content": {"user_ids": ["@bob:origin.example"]}}),
        json!({"type": "m.presence", "sender": "@bob:origin.example", "content": {"presence": "online"}}),
    ]
}

/// A `/send` transaction body from the origin: parsed as the endpoint parses it, checked,
/// its PDUs grouped by room and verified as the inbound pipeline does (with the origin's
/// key at hand; a room ID without a server name is read as room version 12, others as 10),
/// and its EDUs read.
pub fn send_transaction(data: &[u8]) {
    use trellis::federation::inbound::by_room;
    use trellis::federation::pdu::{check_pdus, parse_pdus};
    let parts = request(Method::PUT, X_MATRIX_URI);
    let Ok(txn) = trellis::http::ruma::parse_request::<send_transaction_message::v1::Request>(
        parts,
        data,
        &[TXN_ID.into()],
    ) else {
        return;
    };
    let origin = name(ORIGIN);
    if trellis::http::federation::transactions::check(&origin, &txn).is_err() {
        return;
    }
    for (room_id, raws) in by_room(&origin, &txn.pdus) {
        let version = match room_id.server_name() {
            None => RoomVersionId::V12,
            Some(_) => RoomVersionId::V10,
        };
        let rules = rules(&version);
        let (parsed, _wanted) = parse_pdus(&rules, &raws);
        let checked = check_pdus(&origin_key_map(), &rules, parsed);
        for incoming in checked.into_iter().filter_map(|(_, c)| c.ok()) {
            let _ = incoming.pdu.belongs_to(&room_id);
        }
    }
    for edu in &txn.edus {
        let _ = edu.deserialize();
    }
}

/// A federation media answer: the first byte says how the network cuts the body into
/// chunks, then the `Content-Type` header (a line), then the `multipart/mixed` body. Read
/// as a remote media fetch reads it, once whole and once in those chunks: the answer must
/// not depend on the chunking.
pub fn media_multipart(data: &[u8]) {
    let Some((&chunking, rest)) = data.split_first() else {
        return;
    };
    let (content_type, body) = split_line(rest);
    let Some(content_type) = HeaderValue::from_bytes(content_type)
        .ok()
        .and_then(|v| v.to_str().ok().map(str::to_owned))
    else {
        return;
    };
    let Ok(boundary) = multipart::boundary(&content_type) else {
        return;
    };
    let whole = read_media_answer(body, &boundary, body.len().max(1));
    let chunked = read_media_answer(body, &boundary, usize::from(chunking % 64) + 1);
    // Which bound a refused body met first may differ; whether it is refused may not.
    assert_eq!(
        whole.ok(),
        chunked.ok(),
        "the answer depends on the chunking"
    );
}

/// What a media answer read gives: `(content type, file name, location, file)`.
type MediaAnswer = (Option<String>, Option<String>, Option<String>, Vec<u8>);

fn read_media_answer(body: &[u8], boundary: &str, chunk: usize) -> Result<MediaAnswer, String> {
    let chunks: Vec<Result<Bytes, std::convert::Infallible>> = body
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let mut reader = multipart::MultipartReader::new(futures::stream::iter(chunks), boundary);
    futures::executor::block_on(async {
        let part = multipart::read_head(&mut reader, remote::MAX_METADATA)
            .await
            .map_err(|e| e.to_string())?;
        let owned = |name: &str| part.get(name).map(str::to_owned);
        let (content_type, filename) =
            remote::described(owned("content-type"), owned("content-disposition"));
        if let Some(location) = owned("location") {
            return Ok((content_type, filename, Some(location), Vec::new()));
        }
        let mut file = Vec::new();
        let mut stream = std::pin::pin!(reader.body_stream());
        while let Some(piece) = stream.next().await {
            file.extend_from_slice(&piece.map_err(|e| e.to_string())?);
        }
        Ok::<MediaAnswer, String>((content_type, filename, None, file))
    })
}

/// The pixel limit for images here, far below the default configuration's (32 million):
/// images up to it are decoded whole, and bigger ones would only make each run slower.
pub const MAX_PIXELS: u64 = 1 << 20;

/// An uploaded or fetched file thumbnailed: the first byte picks one of the recommended
/// sizes, the rest is the file. Its header is read, its size checked, the image decoded and
/// scaled; a thumbnail made is an image within the size asked for.
pub fn image(data: &[u8]) {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let asked = [
        (32, 32, Fit::Crop),
        (96, 96, Fit::Crop),
        (320, 240, Fit::Scale),
        (640, 480, Fit::Scale),
        (800, 600, Fit::Scale),
    ];
    let (w, h, fit) = asked[usize::from(pick) % asked.len()];
    let size = thumbnail::choose(w, h, fit);
    if let Ok(rendered) = thumbnail::render_bytes(bytes, size, MAX_PIXELS) {
        let thumb = ::image::load_from_memory(&rendered.bytes).expect("a thumbnail decodes");
        assert!(thumb.width() <= size.width && thumb.height() <= size.height);
    }
}
