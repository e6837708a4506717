//! Hot paths of every event, without a database: building one (canonical JSON, content hash,
//! reference hash, ed25519 signature) and checking it against the auth rules.

#[path = "support/fixture.rs"]
mod fixture;

use std::collections::HashMap;

use criterion::{Criterion, criterion_group, criterion_main};
use ruma::events::StateEventType;
use serde_json::json;
use trellis::room::append::authorise;
use trellis::room::pdu::Pdu;

fn build_and_sign(c: &mut Criterion) {
    let f = fixture::Fixture::new();
    let base = f.base();
    let auth = [
        base.create.clone(),
        base.power_levels.clone(),
        base.creator_join.clone(),
    ];
    c.bench_function("event: canonical JSON + hashes + signature", |b| {
        b.iter(|| {
            f.event(
                &f.creator,
                "m.room.message",
                None,
                json!({"msgtype": "m.text", "body": "a message of ordinary length, about sixty bytes"}),
                std::slice::from_ref(&base.join_rules),
                &auth,
                5,
            )
        })
    });
}

fn auth_check(c: &mut Criterion) {
    let f = fixture::Fixture::new();
    let base = f.base();
    let state: HashMap<(StateEventType, String), Pdu> = base
        .events
        .iter()
        .map(|e| {
            let key = e.pdu.state_key.clone().unwrap_or_default();
            (
                (StateEventType::from(e.pdu.kind.to_string()), key),
                e.pdu.clone(),
            )
        })
        .collect();
    let message = f.event(
        &f.creator,
        "m.room.message",
        None,
        json!({"msgtype": "m.text", "body": "hello"}),
        std::slice::from_ref(&base.join_rules),
        &[
            base.create.clone(),
            base.power_levels.clone(),
            base.creator_join.clone(),
        ],
        5,
    );
    let join = f
        .joins(&base, 0, 1, "joiner", &base.join_rules, 5)
        .remove(0);
    c.bench_function("auth check: a message", |b| {
        b.iter(|| authorise(&f.rules, &message.pdu, &state).expect("authorised"))
    });
    c.bench_function("auth check: a join to a public room", |b| {
        b.iter(|| authorise(&f.rules, &join.pdu, &state).expect("authorised"))
    });
}

criterion_group!(benches, build_and_sign, auth_check);
criterion_main!(benches);
