//! Reviewing rewards: approve, deny, one at a time or many at once.
//!
//! Who may: support members and admins (viewers only read the queue). Support members
//! decide rewards up to the program's `rewards_support_approval_limit`; larger ones need an
//! admin. API tokens act for the program's backend and decide like admins.
//!
//! Approving a reward whose hold is over credits it at once, in the same transaction;
//! approving one still in hold leaves it `approved` for the hold release to credit.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::json;

use crate::db::schema::{programs, rewards};
use crate::domain::ledger::format_amount;
use crate::domain::webhooks::Event;
use crate::domain::{audit, has_control_chars_beyond_lines, Actor};
use crate::error::{Error, FieldErrors};

use super::credit::{credit_locked, credit_many};
use super::events;
use super::{Reward, RewardStatus};

/// The most rewards one bulk request decides.
pub const MAX_BULK: usize = 5000;
pub const MAX_REASON_CHARS: usize = 1000;

/// Who reviews, and whether they may decide rewards above the support threshold.
#[derive(Clone, Debug)]
pub struct Reviewer {
    pub actor: Actor,
    pub is_admin: bool,
}

/// A reviewer's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Approve,
    /// With the reason, parsed by [`parse_reason`].
    Deny(String),
}

impl Decision {
    fn verb(&self) -> &'static str {
        match self {
            Decision::Approve => "approved",
            Decision::Deny(_) => "denied",
        }
    }
}

/// A denial's reason: required, at most [`MAX_REASON_CHARS`] characters.
pub fn parse_reason(raw: &str) -> Result<String, Error> {
    let reason = raw.trim();
    if reason.is_empty() {
        return Err(Error::invalid("reason", "Say why the reward is denied."));
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(Error::invalid(
            "reason",
            format!("The reason may have at most {MAX_REASON_CHARS} characters."),
        ));
    }
    if has_control_chars_beyond_lines(reason) {
        return Err(Error::invalid(
            "reason",
            "The reason cannot hold control characters (line breaks and tabs are fine).",
        ));
    }
    Ok(reason.to_string())
}

/// The program's threshold above which only admins decide.
pub fn support_limit(conn: &mut PgConnection, program_id: i64) -> Result<Option<BigDecimal>, Error> {
    Ok(programs::table
        .find(program_id)
        .select(programs::rewards_support_approval_limit)
        .first(conn)?)
}

/// Why `decision` cannot apply to `reward` now, if it cannot.
fn refusal(
    reward: &Reward,
    decision: &Decision,
    reviewer: &Reviewer,
    limit: Option<&BigDecimal>,
) -> Option<String> {
    if !status_allows(reward, decision) {
        let which = match decision {
            Decision::Approve => "only pending rewards can be approved",
            Decision::Deny(_) => "only pending or approved rewards can be denied",
        };
        return Some(format!("Reward #{} is {}: {which}.", reward.id, reward.status));
    }
    match limit {
        Some(limit) if !reviewer.is_admin && &reward.amount > limit => Some(format!(
            "Reward #{} is {} {}, above the {} support members may decide: an admin must decide it.",
            reward.id,
            format_amount(&reward.amount, reward.is_currency),
            reward.amount_units,
            format_amount(limit, reward.is_currency),
        )),
        _ => None,
    }
}

/// One reward of the program.
pub fn find(conn: &mut PgConnection, program_id: i64, id: i64) -> Result<Reward, Error> {
    Ok(rewards::table
        .filter(rewards::program_id.eq(program_id))
        .filter(rewards::id.eq(id))
        .select(Reward::as_select())
        .first(conn)?)
}

/// Locks and reads one reward of the program.
fn lock(conn: &mut PgConnection, program_id: i64, id: i64) -> Result<Reward, Error> {
    Ok(rewards::table
        .filter(rewards::program_id.eq(program_id))
        .filter(rewards::id.eq(id))
        .select(Reward::as_select())
        .for_update()
        .first(conn)?)
}

/// Applies a decision to a locked reward that may take it; credits an approved reward
/// whose hold is over.
fn apply(
    conn: &mut PgConnection,
    reward: &Reward,
    reviewer: &Reviewer,
    decision: &Decision,
    now: DateTime<Utc>,
) -> Result<Reward, Error> {
    let decided = record(conn, reward, reviewer, decision)?;
    announce_decided(conn, decision, std::slice::from_ref(&decided))?;
    if decided.status == RewardStatus::Approved && decided.hold_until <= now {
        return credit_locked(conn, &decided, &reviewer.actor);
    }
    Ok(decided)
}

/// `reward.approved` or `reward.denied` for rewards just decided.
fn announce_decided(conn: &mut PgConnection, decision: &Decision, decided: &[Reward]) -> Result<(), Error> {
    let event = match decision {
        Decision::Approve => Event::RewardApproved,
        Decision::Deny(_) => Event::RewardDenied,
    };
    events::announce(conn, event, decided)
}

/// The decision's status change and its audit event, on a locked reward.
fn record(
    conn: &mut PgConnection,
    reward: &Reward,
    reviewer: &Reviewer,
    decision: &Decision,
) -> Result<Reward, Error> {
    let (status, reason) = match decision {
        Decision::Approve => (RewardStatus::Approved, None),
        Decision::Deny(reason) => (RewardStatus::Denied, Some(reason.as_str())),
    };
    let decided: Reward = diesel::update(rewards::table.find(reward.id))
        .set((
            rewards::status.eq(status),
            rewards::deny_reason.eq(reason),
            rewards::decided_by_member_id.eq(reviewer.actor.member_id),
            rewards::decided_by_token_id.eq(reviewer.actor.token_id),
            rewards::decided_at.eq(diesel::dsl::now),
            rewards::updated_at.eq(diesel::dsl::now),
        ))
        .returning(Reward::as_returning())
        .get_result(conn)?;
    audit::record(
        conn,
        &reviewer.actor,
        audit::Change {
            program_id: Some(reward.program_id),
            action: match decision {
                Decision::Approve => "reward.approve",
                Decision::Deny(_) => "reward.deny",
            },
            subject_type: "reward",
            subject_id: Some(reward.id.to_string()),
            customer_id: Some(reward.beneficiary_id),
            before: Some(json!({ "status": reward.status })),
            after: Some(json!({ "status": decided.status, "deny_reason": decided.deny_reason })),
        },
    )?;
    Ok(decided)
}

/// Approves or denies one reward. A reward another status forbids is a 422; one above
/// the support threshold, decided by a support member, a 403.
pub fn decide(
    conn: &mut PgConnection,
    program_id: i64,
    reviewer: &Reviewer,
    id: i64,
    decision: &Decision,
    now: DateTime<Utc>,
) -> Result<Reward, Error> {
    conn.transaction(|conn| {
        let reward = lock(conn, program_id, id)?;
        let limit = support_limit(conn, program_id)?;
        if let Some(message) = refusal(&reward, decision, reviewer, limit.as_ref()) {
            return Err(if status_allows(&reward, decision) {
                Error::Forbidden(message)
            } else {
                Error::invalid("reward", message)
            });
        }
        apply(conn, &reward, reviewer, decision, now)
    })
}

/// Whether the reward's status can take the decision (whoever decides).
fn status_allows(reward: &Reward, decision: &Decision) -> bool {
    match decision {
        Decision::Approve => reward.status == RewardStatus::Pending,
        Decision::Deny(_) => matches!(reward.status, RewardStatus::Pending | RewardStatus::Approved),
    }
}

/// What a bulk decision did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BulkOutcome {
    pub decided: usize,
    /// Approved rewards whose hold was over, credited at once.
    pub credited: usize,
}

/// Decides every reward of `ids` or none: when any of them cannot take the decision
/// (unknown, already decided, above the reviewer's threshold) nothing changes and the
/// answer is a 422 naming each one and why (field `rewards`).
pub fn decide_many(
    conn: &mut PgConnection,
    program_id: i64,
    reviewer: &Reviewer,
    ids: &[i64],
    decision: &Decision,
    now: DateTime<Utc>,
) -> Result<BulkOutcome, Error> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Err(Error::invalid("rewards", "Select at least one reward."));
    }
    if ids.len() > MAX_BULK {
        return Err(Error::invalid(
            "rewards",
            format!(
                "At most {MAX_BULK} rewards can be {} at once; narrow the selection.",
                decision.verb()
            ),
        ));
    }
    conn.transaction(|conn| {
        // Locked in id order, like every bulk request, so two of them cannot deadlock.
        let mut found: Vec<Reward> = rewards::table
            .filter(rewards::program_id.eq(program_id))
            .filter(rewards::id.eq_any(&ids))
            .order(rewards::id.asc())
            .select(Reward::as_select())
            .for_update()
            .load(conn)?;
        let limit = support_limit(conn, program_id)?;
        let mut problems: Vec<String> = ids
            .iter()
            .filter(|id| !found.iter().any(|reward| reward.id == **id))
            .map(|id| format!("Reward #{id} does not exist in this program."))
            .collect();
        problems.extend(
            found
                .iter()
                .filter_map(|reward| refusal(reward, decision, reviewer, limit.as_ref())),
        );
        if !problems.is_empty() {
            let mut fields = FieldErrors::new();
            fields.insert("rewards".to_string(), problems);
            return Err(Error::invalid_fields(fields));
        }
        // Credits lock beneficiaries; in beneficiary order, as the hold release does.
        found.sort_by_key(|reward| (reward.beneficiary_id, reward.id));
        let mut decided = Vec::with_capacity(found.len());
        for reward in &found {
            decided.push(record(conn, reward, reviewer, decision)?);
        }
        announce_decided(conn, decision, &decided)?;
        let due: Vec<Reward> = decided
            .into_iter()
            .filter(|reward| reward.status == RewardStatus::Approved && reward.hold_until <= now)
            .collect();
        Ok(BulkOutcome {
            decided: found.len(),
            credited: credit_many(conn, &due, &reviewer.actor)?,
        })
    })
}
