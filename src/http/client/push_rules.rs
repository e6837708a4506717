//! `GET /_matrix/client/v3/pushrules/`, `GET /pushrules/global/`, and per rule
//! `GET/PUT/DELETE /pushrules/global/{kind}/{ruleId}`, `…/enabled`, `…/actions`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#push-rules-api)

use axum::Router;
use ruma::api::client::push::{
    PushRule, delete_pushrule, get_pushrule, get_pushrule_actions, get_pushrule_enabled,
    get_pushrules_all, get_pushrules_global_scope, set_pushrule, set_pushrule_actions,
    set_pushrule_enabled,
};
use ruma::push::{InsertPushRuleError, RemovePushRuleError, RuleKind, Ruleset};

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, get_all_route);
    let r = route(r, get_global_route);
    let r = route(r, get_rule_route);
    let r = route(r, set_rule_route);
    let r = route(r, delete_rule_route);
    let r = route(r, get_enabled_route);
    let r = route(r, set_enabled_route);
    let r = route(r, get_actions_route);
    route(r, set_actions_route)
}

fn rule_not_found() -> Error {
    Error::not_found("Push rule not found")
}

fn find(rules: &Ruleset, kind: RuleKind, rule_id: &str) -> Result<PushRule> {
    rules
        .get(kind, rule_id)
        .map(|r| r.to_owned().into())
        .ok_or_else(rule_not_found)
}

/// # `GET /_matrix/client/v3/pushrules/`
async fn get_all_route(
    state: AppState,
    req: Ruma<get_pushrules_all::v3::Request>,
) -> Result<get_pushrules_all::v3::Response> {
    Ok(get_pushrules_all::v3::Response::new(
        state.accounts.push_rules(&req.auth.user_id).await?,
    ))
}

/// # `GET /_matrix/client/v3/pushrules/global/`
async fn get_global_route(
    state: AppState,
    req: Ruma<get_pushrules_global_scope::v3::Request>,
) -> Result<get_pushrules_global_scope::v3::Response> {
    Ok(get_pushrules_global_scope::v3::Response::new(
        state.accounts.push_rules(&req.auth.user_id).await?,
    ))
}

/// # `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
async fn get_rule_route(
    state: AppState,
    req: Ruma<get_pushrule::v3::Request>,
) -> Result<get_pushrule::v3::Response> {
    let rules = state.accounts.push_rules(&req.auth.user_id).await?;
    Ok(get_pushrule::v3::Response::new(find(
        &rules,
        req.body.kind,
        &req.body.rule_id,
    )?))
}

/// # `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
async fn set_rule_route(
    state: AppState,
    req: Ruma<set_pushrule::v3::Request>,
) -> Result<set_pushrule::v3::Response> {
    let user_id = &req.auth.user_id;
    let body = req.body;
    let mut rules = state.accounts.push_rules(user_id).await?;
    rules
        .insert(body.rule, body.after.as_deref(), body.before.as_deref())
        .map_err(|e| match e {
            InsertPushRuleError::UnknownRuleId => {
                Error::not_found("The before or after rule does not exist")
            }
            other => Error::bad_json(other.to_string()),
        })?;
    state.accounts.set_push_rules(user_id, rules).await?;
    Ok(set_pushrule::v3::Response::new())
}

/// # `DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
async fn delete_rule_route(
    state: AppState,
    req: Ruma<delete_pushrule::v3::Request>,
) -> Result<delete_pushrule::v3::Response> {
    let user_id = &req.auth.user_id;
    let mut rules = state.accounts.push_rules(user_id).await?;
    rules
        .remove(req.body.kind, &req.body.rule_id)
        .map_err(|e| match e {
            RemovePushRuleError::ServerDefault => {
                Error::bad_json("Server-default rules cannot be deleted")
            }
            _ => rule_not_found(),
        })?;
    state.accounts.set_push_rules(user_id, rules).await?;
    Ok(delete_pushrule::v3::Response::new())
}

/// # `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
async fn get_enabled_route(
    state: AppState,
    req: Ruma<get_pushrule_enabled::v3::Request>,
) -> Result<get_pushrule_enabled::v3::Response> {
    let rules = state.accounts.push_rules(&req.auth.user_id).await?;
    let rule = rules
        .get(req.body.kind, &req.body.rule_id)
        .ok_or_else(rule_not_found)?;
    Ok(get_pushrule_enabled::v3::Response::new(rule.enabled()))
}

/// # `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
async fn set_enabled_route(
    state: AppState,
    req: Ruma<set_pushrule_enabled::v3::Request>,
) -> Result<set_pushrule_enabled::v3::Response> {
    let user_id = &req.auth.user_id;
    let mut rules = state.accounts.push_rules(user_id).await?;
    rules
        .set_enabled(req.body.kind, &req.body.rule_id, req.body.enabled)
        .map_err(|_| rule_not_found())?;
    state.accounts.set_push_rules(user_id, rules).await?;
    Ok(set_pushrule_enabled::v3::Response::new())
}

/// # `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
async fn get_actions_route(
    state: AppState,
    req: Ruma<get_pushrule_actions::v3::Request>,
) -> Result<get_pushrule_actions::v3::Response> {
    let rules = state.accounts.push_rules(&req.auth.user_id).await?;
    let rule = rules
        .get(req.body.kind, &req.body.rule_id)
        .ok_or_else(rule_not_found)?;
    Ok(get_pushrule_actions::v3::Response::new(
        rule.actions().to_vec(),
    ))
}

/// # `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
async fn set_actions_route(
    state: AppState,
    req: Ruma<set_pushrule_actions::v3::Request>,
) -> Result<set_pushrule_actions::v3::Response> {
    let user_id = &req.auth.user_id;
    let mut rules = state.accounts.push_rules(user_id).await?;
    rules
        .set_actions(req.body.kind, &req.body.rule_id, req.body.actions)
        .map_err(|_| rule_not_found())?;
    state.accounts.set_push_rules(user_id, rules).await?;
    Ok(set_pushrule_actions::v3::Response::new())
}
