//! The fuzz targets' saved inputs, replayed in the ordinary test suite: every file under
//! `fuzz/corpus/<target>/` (seeds) and `fuzz/regressions/<target>/` (inputs that once made a
//! target fail) goes through the same body the fuzz target runs (`fuzz/src/lib.rs`, compiled
//! here as a module), without cargo-fuzz or instrumentation. No database, no network.

use std::path::{Path, PathBuf};

#[path = "../fuzz/src/lib.rs"]
mod targets;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, in name order; none when it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_saved_input_replays_cleanly() {
    let mut failed = Vec::new();
    for (name, body) in targets::TARGETS {
        let seeds = inputs(&fuzz_dir().join("corpus").join(name));
        assert!(!seeds.is_empty(), "no seeds for the fuzz target {name}");
        let regressions = inputs(&fuzz_dir().join("regressions").join(name));
        for path in seeds.iter().chain(&regressions) {
            let data = std::fs::read(path).expect("a readable input");
            if std::panic::catch_unwind(|| body(&data)).is_err() {
                failed.push(path.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "inputs that fail: {failed:#?}");
}

/// The signed seeds verify, so that the targets start from inputs that reach past the
/// signature checks (a change to signing or to the fixed key would leave them stale).
#[test]
fn signed_seeds_verify() {
    use ruma::api::federation::authentication::XMatrix;
    use trellis::federation::pdu::{check_pdus, parse_pdus};
    let corpus = fuzz_dir().join("corpus");
    let keys = || {
        let k = targets::origin_keys();
        let set = [(k.key_id().to_string(), k.public_key())].into();
        ruma::signatures::PublicKeyMap::from([(targets::ORIGIN.to_owned(), set)])
    };
    for path in inputs(&corpus.join("x_matrix")) {
        let data = std::fs::read(&path).unwrap();
        let split = data.iter().position(|&b| b == b'\n').unwrap();
        let x = XMatrix::parse(std::str::from_utf8(&data[..split]).unwrap()).unwrap();
        let parts = http::Request::builder()
            .method("PUT")
            .uri(targets::X_MATRIX_URI)
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let ours = ruma::ServerName::parse(targets::OURS).unwrap();
        trellis::http::auth::verify_x_matrix(&x, &parts, &data[split + 1..], &ours, &keys())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    for path in inputs(&corpus.join("pdu")) {
        let data = std::fs::read(&path).unwrap();
        let rules = targets::VERSIONS[usize::from(data[0])].rules().unwrap();
        let raw: &serde_json::value::RawValue = serde_json::from_slice(&data[1..]).unwrap();
        let (parsed, _) = parse_pdus(&rules, &[raw]);
        for (_, checked) in check_pdus(&keys(), &rules, parsed) {
            checked.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}

/// Writes the seed corpus (`fuzz/corpus/`): real inputs of each kind, the signed ones signed
/// with the fuzz origin's fixed key so that they verify in the targets. Run by hand after
/// changing what the seeds should be:
/// `cargo test --test fuzz_corpus -- --ignored write_seeds`.
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_seeds() {
    seeds::write_all(&fuzz_dir().join("corpus"));
}

mod seeds {
    use std::path::Path;

    use ruma::api::federation::authentication::{XMatrix, XMatrixSigningInput};
    use ruma::events::TimelineEventType;
    use ruma::{OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomVersionId};
    use serde_json::json;
    use serde_json::value::RawValue;
    use trellis::room::pdu::{NewContent, Placement, build};

    use super::targets::{ORIGIN, OURS, VERSIONS, X_MATRIX_URI, origin_keys};

    pub fn write_all(corpus: &Path) {
        let write = |target: &str, name: &str, data: &[u8]| {
            let dir = corpus.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), data).unwrap();
        };
        // Room versions 3 on: the signed seeds use the ID formats of current rooms.
        let rooms: Vec<(RoomVersionId, Vec<(OwnedEventId, String)>)> = super::targets::VERSIONS
            [2..]
            .iter()
            .cloned()
            .map(|v| {
                let events = room(&v);
                (v, events)
            })
            .collect();
        for (version, events) in &rooms {
            let pick = VERSIONS.iter().position(|v| v == version).unwrap() as u8;
            let kinds = ["create", "member", "message", "redaction"];
            for (kind, (_, json)) in kinds.iter().zip(events) {
                let mut data = vec![pick];
                data.extend_from_slice(json.as_bytes());
                write("pdu", &format!("{version}-{kind}.bin"), &data);
            }
        }

        let transaction = |events: &[(OwnedEventId, String)], edus: serde_json::Value| {
            let pdus: Vec<serde_json::Value> = events
                .iter()
                .map(|(_, json)| serde_json::from_str(json).unwrap())
                .collect();
            serde_json::to_vec(&json!({
                "origin": ORIGIN,
                "origin_server_ts": 1_767_225_600_000_u64,
                "pdus": pdus,
                "edus": edus,
            }))
            .unwrap()
        };
        let room_of = |events: &[(OwnedEventId, String)]| -> String {
            let v: serde_json::Value = serde_json::from_str(&events[1].1).unwrap();
            v["room_id"].as_str().unwrap().to_owned()
        };
        let v10 = &rooms[7].1;
        let v12 = &rooms[9].1;
        let room10 = room_of(v10);
        let edus = json!([
            {"edu_type": "m.typing", "content": {"room_id": room10, "user_id": "@alice:origin.example", "typing": true}},
            {"edu_type": "m.receipt", "content": {room10.clone(): {"m.read": {"@alice:origin.example": {
                "event_ids": [v10[2].0.as_str()], "data": {"ts": 1_767_225_600_000_u64, "thread_id": "main"}}}}}},
            {"edu_type": "m.presence", "content": {"push": [{"user_id": "@alice:origin.example",
                "presence": "online", "last_active_ago": 5000, "currently_active": true, "status_msg": "hi"}]}},
            {"edu_type": "m.device_list_update", "content": {"user_id": "@alice:origin.example",
                "device_id": "PHONE", "device_display_name": "Phone", "stream_id": 6, "prev_id": [5], "deleted": false}},
            {"edu_type": "m.direct_to_device", "content": {"sender": "@alice:origin.example",
                "type": "m.room_key_request", "message_id": "hiezohf6Hoo7kaev",
                "messages": {"@bob:trellis.example": {"*": {"action": "request_cancellation",
                    "request_id": "1495474790150.19", "requesting_device_id": "PHONE"}}}}},
        ]);
        let txn10 = transaction(&v10[1..], edus);
        write("send_transaction", "v10-events-and-edus.json", &txn10);
        let txn12 = transaction(v12, json!([]));
        write("send_transaction", "v12-room-created.json", &txn12);
        write(
            "send_transaction",
            "empty.json",
            &transaction(&[], json!([])),
        );

        for (name, body) in [("with-body", &txn10[..]), ("no-body", &b""[..])] {
            let header = x_matrix(body).to_string();
            let mut data = header.clone().into_bytes();
            data.push(b'\n');
            data.extend_from_slice(body);
            write("x_matrix", &format!("{name}.txt"), &data);
            if name == "no-body" {
                // Quoted values, no destination (older servers), another parameter order.
                let x = x_matrix(body);
                let older = format!(
                    "X-Matrix sig=\"{}\",origin=\"{}\",key=\"{}\"",
                    x.sig.encode(),
                    x.origin,
                    x.key
                );
                write(
                    "x_matrix",
                    "older-form.txt",
                    format!("{older}\n").as_bytes(),
                );
            }
        }

        let search_room = "!room:origin.example";
        for (name, token) in [
            ("sync", "s42_7_3_9_5_11_2".to_owned()),
            ("sync-initial", "s0_0_0_0_0_0_0".to_owned()),
            ("topological", "t17_-4".to_owned()),
            ("topological-start", "t0_0".to_owned()),
            (
                "directory",
                trellis::room::directory::DirectoryToken {
                    forward: true,
                    joined: 7,
                    room_id: OwnedRoomId::try_from(search_room).unwrap(),
                }
                .to_string(),
            ),
            ("search-rank", format!("r1234_3d790a3c_-17~r{search_room}")),
            ("search-recent", "t99_12~s@alice:origin.example".to_owned()),
            ("sliding-pos", "12".to_owned()),
        ] {
            write("tokens", &format!("{name}.txt"), token.as_bytes());
        }

        for (name, filter) in [
            (
                "element-lazy-load",
                json!({"room": {"state": {"lazy_load_members": true},
                                "timeline": {"unread_thread_notifications": true}}}),
            ),
            (
                "everything",
                json!({"event_format": "client", "event_fields": ["type", "content.body", "content.m\\.relates_to"],
                       "presence": {"not_types": ["*"], "limit": 3},
                       "account_data": {"types": ["m.push_rules", "im.vector.*"]},
                       "room": {"rooms": ["!room:trellis.example"], "not_rooms": ["!spam:origin.example"],
                                "include_leave": true,
                                "timeline": {"limit": 20, "types": ["m.room.*"], "not_senders": ["@spam:origin.example"],
                                             "contains_url": true, "lazy_load_members": true},
                                "state": {"types": ["m.room.member"], "include_redundant_members": false},
                                "ephemeral": {"not_types": ["m.typing"]},
                                "account_data": {"limit": 5}}}),
            ),
            ("empty", json!({})),
        ] {
            write(
                "filter",
                &format!("{name}.json"),
                &serde_json::to_vec(&filter).unwrap(),
            );
        }

        let w = trellis::media::multipart::MultipartWriter::default();
        let file = b"GIF89a tiny file";
        let mut body = w.head("image/gif", "inline; filename=\"cat.gif\"").to_vec();
        body.extend_from_slice(file);
        body.extend_from_slice(&w.tail());
        let with_type = |chunking: u8, content_type: &str, body: &[u8]| {
            let mut data = vec![chunking];
            data.extend_from_slice(content_type.as_bytes());
            data.push(b'\n');
            data.extend_from_slice(body);
            data
        };
        write(
            "media_multipart",
            "ours.bin",
            &with_type(6, &w.content_type(), &body),
        );
        write(
            "media_multipart",
            "location.bin",
            &with_type(
                2,
                "multipart/mixed; boundary=\"xyz\"",
                b"\r\n--xyz\r\nContent-Type: application/json\r\n\r\n{}\r\n--xyz\r\n\
                  Location: https://cdn.origin.example/f\r\n\r\n\r\n--xyz",
            ),
        );
        write(
            "media_multipart",
            "attachment-lf.bin",
            &with_type(
                0,
                "Multipart/Mixed; charset=utf-8; boundary=b",
                b"--b\n\n{\"a\":1}\n--b\nContent-Type: text/plain\nContent-Disposition: attachment; \
                  filename*=utf-8''na%C3%AFve.txt\n\nhello\r\n--b--\r\n",
            ),
        );

        for (name, data) in images() {
            write("image", &name, &data);
        }
    }

    /// A room's first events in `version`: its create event, the creator's join, a message
    /// in a thread and a redaction of that message, each built and signed as we build ours.
    fn room(version: &RoomVersionId) -> Vec<(OwnedEventId, String)> {
        let rules = version.rules().unwrap();
        let keys = origin_keys();
        let sender = OwnedUserId::try_from(format!("@alice:{ORIGIN}")).unwrap();
        let content = |v: serde_json::Value| RawValue::from_string(v.to_string()).unwrap();
        let create_content = match rules.authorization.use_room_create_sender {
            true => json!({"room_version": version.as_str()}),
            false => json!({"creator": sender.as_str(), "room_version": version.as_str()}),
        };
        let fixed_room = OwnedRoomId::try_from(format!("!seed:{ORIGIN}")).unwrap();
        let v12 = rules.authorization.room_create_event_id_as_room_id;
        let mut events: Vec<(OwnedEventId, String)> = Vec::new();
        let mut room_id = fixed_room.clone();
        let steps: [(TimelineEventType, Option<String>, serde_json::Value, bool); 4] = [
            (
                TimelineEventType::RoomCreate,
                Some(String::new()),
                create_content,
                false,
            ),
            (
                TimelineEventType::RoomMember,
                Some(sender.to_string()),
                json!({"membership": "join", "displayname": "Alice"}),
                false,
            ),
            (
                TimelineEventType::RoomMessage,
                None,
                json!({"msgtype": "m.text", "body": "hello, fuzz",
                       "m.relates_to": {"rel_type": "m.thread", "event_id": "$thread-root"}}),
                false,
            ),
            (TimelineEventType::RoomRedaction, None, json!({}), true),
        ];
        for (depth, (kind, state_key, body, redaction)) in steps.into_iter().enumerate() {
            let redacts = redaction.then(|| events[2].0.clone());
            let mut body = body;
            if let Some(r) = &redacts
                && rules.redaction.content_field_redacts
            {
                body["redacts"] = json!(r.as_str());
            }
            let auth: Vec<OwnedEventId> = match (depth, v12) {
                (0, _) => vec![],
                (_, true) => events[1..]
                    .iter()
                    .take(1)
                    .map(|(id, _)| id.clone())
                    .collect(),
                (_, false) => events.iter().take(2).map(|(id, _)| id.clone()).collect(),
            };
            let prev: Vec<OwnedEventId> = events
                .last()
                .map(|(id, _)| id.clone())
                .into_iter()
                .collect();
            let new = NewContent {
                kind,
                state_key,
                content: content(body),
                redacts,
            };
            let at = Placement {
                room_id: match (depth, v12) {
                    (0, true) => None,
                    _ => Some(&*room_id),
                },
                version,
                rules: &rules,
                sender: &sender,
                prev_events: &prev,
                auth_events: &auth,
                depth: depth as i64 + 1,
            };
            let (id, json) = build(keys, &new, &at).unwrap();
            if depth == 0 && v12 {
                room_id =
                    OwnedRoomId::try_from(format!("!{}", id.as_str().trim_start_matches('$')))
                        .unwrap();
            }
            events.push((id, json));
        }
        events
    }

    fn x_matrix(body: &[u8]) -> XMatrix {
        let request = http::Request::builder()
            .method("PUT")
            .uri(X_MATRIX_URI)
            .body(body)
            .unwrap();
        let input = XMatrixSigningInput::new(
            OwnedServerName::try_from(ORIGIN).unwrap(),
            OwnedServerName::try_from(OURS).unwrap(),
            origin_keys().key_pair(),
        );
        XMatrix::sign_http_request(&request, input).unwrap()
    }

    /// Tiny images of each format thumbnails are made of, each with the byte picking the size.
    fn images() -> Vec<(String, Vec<u8>)> {
        use image::{DynamicImage, ImageFormat, RgbaImage};
        let picture = RgbaImage::from_fn(40, 30, |x, y| {
            image::Rgba([
                (x * 6) as u8,
                (y * 8) as u8,
                90,
                if x > 35 { 128 } else { 255 },
            ])
        });
        let mut out = Vec::new();
        for (pick, format, ext) in [
            (0u8, ImageFormat::Png, "png"),
            (1, ImageFormat::Jpeg, "jpg"),
            (2, ImageFormat::Gif, "gif"),
            (3, ImageFormat::WebP, "webp"),
        ] {
            let image = match format {
                ImageFormat::Jpeg => {
                    DynamicImage::ImageRgb8(DynamicImage::from(picture.clone()).into_rgb8())
                }
                _ => DynamicImage::ImageRgba8(picture.clone()),
            };
            let mut bytes = std::io::Cursor::new(Vec::new());
            image.write_to(&mut bytes, format).unwrap();
            let mut data = vec![pick];
            data.extend_from_slice(&bytes.into_inner());
            out.push((format!("tiny.{ext}"), data));
        }
        out
    }
}
