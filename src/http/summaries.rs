//! Room summaries (space hierarchies) as other servers and clients read them.
//!
//! ruma leaves a summary's `join_rule` out when it is `public`, which the spec allows (an
//! absent join rule means public). Synapse hands the summaries it gets from other servers to
//! its clients as they came, and clients then find no join rule at all; so every summary we
//! answer with spells it out. ruma omits nothing else but that one default (a join rule it
//! cannot write is turned into `invite` before it gets here), so an absent `join_rule` in what
//! ruma wrote means `public`.

use serde_json::Value;

/// The client `/hierarchy` answer: every room of the page.
pub fn client_hierarchy(body: &mut Value) {
    if let Some(rooms) = body.get_mut("rooms").and_then(Value::as_array_mut) {
        rooms.iter_mut().for_each(spell_out_join_rule);
    }
}

/// The federation `/hierarchy` answer: the room asked about and its accessible children.
pub fn federation_hierarchy(body: &mut Value) {
    if let Some(room) = body.get_mut("room") {
        spell_out_join_rule(room);
    }
    if let Some(children) = body.get_mut("children").and_then(Value::as_array_mut) {
        children.iter_mut().for_each(spell_out_join_rule);
    }
}

/// The client room summary answer (MSC3266): one summary.
pub fn room_summary(body: &mut Value) {
    spell_out_join_rule(body);
}

fn spell_out_join_rule(summary: &mut Value) {
    if let Some(summary) = summary.as_object_mut() {
        summary
            .entry("join_rule")
            .or_insert_with(|| Value::from("public"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn absent_join_rules_are_written_as_public_and_others_kept() {
        let mut client = json!({
            "rooms": [
                {"room_id": "!a:x", "children_state": []},
                {"room_id": "!b:x", "join_rule": "invite", "children_state": []},
            ],
            "next_batch": "t",
        });
        client_hierarchy(&mut client);
        assert_eq!(client["rooms"][0]["join_rule"], "public");
        assert_eq!(client["rooms"][1]["join_rule"], "invite");
        assert_eq!(client["next_batch"], "t");

        let mut federation = json!({
            "room": {"room_id": "!s:x", "children_state": []},
            "children": [{"room_id": "!a:x"}, {"room_id": "!b:x", "join_rule": "knock"}],
            "inaccessible_children": ["!c:x"],
        });
        federation_hierarchy(&mut federation);
        assert_eq!(federation["room"]["join_rule"], "public");
        assert_eq!(federation["children"][0]["join_rule"], "public");
        assert_eq!(federation["children"][1]["join_rule"], "knock");
        assert_eq!(federation["inaccessible_children"], json!(["!c:x"]));
    }
}
