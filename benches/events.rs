//! Hot paths of every event, without a database: building one (canonical JSON, content hash,
//! reference hash, ed25519 signature) and checking it against the auth rules.

#[path = "../tests/common/dag.rs"]
mod dag;

use std::collections::HashMap;

use criterion::{Criterion, criterion_group, criterion_main};
use dag::Dag;
use ruma::RoomVersionId;
use ruma::events::StateEventType;
use serde_json::json;
use trellis::room::append::authorise;
use trellis::room::pdu::Pdu;

fn build_and_sign(c: &mut Criterion) {
    let mut dag = Dag::new("bench.test", RoomVersionId::V10);
    let creator = dag.user("creator");
    let base = dag.base(&creator);
    let auth = [
        base.create.clone(),
        base.power_levels.clone(),
        base.creator_join.clone(),
    ];
    c.bench_function("event: canonical JSON + hashes + signature", |b| {
        b.iter(|| {
            dag.build(
                &creator,
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
    let mut dag = Dag::new("bench.test", RoomVersionId::V10);
    let creator = dag.user("creator");
    dag.base(&creator);
    let state: HashMap<(StateEventType, String), Pdu> = dag
        .events()
        .iter()
        .map(|e| {
            let key = e.pdu.state_key.clone().unwrap_or_default();
            (
                (StateEventType::from(e.pdu.kind.to_string()), key),
                e.pdu.clone(),
            )
        })
        .collect();
    let rules = dag.rules.clone();
    let on_base = dag.head();
    let message = dag.message(&creator, "hello");
    dag.fork(&on_base);
    let joiner = dag.user("u0");
    let join = dag.state(
        &joiner,
        "m.room.member",
        joiner.as_str(),
        json!({"membership": "join", "displayname": "joiner"}),
    );
    let (message, join) = (
        dag.event(&message).pdu.clone(),
        dag.event(&join).pdu.clone(),
    );
    c.bench_function("auth check: a message", |b| {
        b.iter(|| authorise(&rules, &message, &state).expect("authorised"))
    });
    c.bench_function("auth check: a join to a public room", |b| {
        b.iter(|| authorise(&rules, &join, &state).expect("authorised"))
    });
}

criterion_group!(benches, build_and_sign, auth_check);
criterion_main!(benches);
