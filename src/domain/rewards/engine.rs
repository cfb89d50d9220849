//! Firing reward rules: an event of a referred friend (created, approved, a sale) goes
//! through the program's enabled rules of that trigger, each of which may create a reward
//! for the referrer, the friend or both.
//!
//! Callers run [`fire`] inside the database transaction of the event itself (the signup,
//! the approval, the booked transaction), so an event and its rewards commit together.
//! A rule fires at most once per (rule, beneficiary, event): `rewards_once_per_event`.
//!
//! Limits are checked under locks taken only when the rule has such a limit, so that
//! concurrent events cannot both pass the same check: per-referrer limits lock
//! (rule, referrer) with a transaction-scoped advisory lock, a budget locks the rule's row
//! and reads the rule's running total (`reward_tallies.amount`).
//! Rules are visited in id order, so two events take their locks in the same order.
//!
//! A rule that looked at the event and created nothing says why ([`Note`]); for sales the
//! notes are stored on the transaction (`transactions.reward_notes`).

use bigdecimal::{BigDecimal, RoundingMode, Zero};
use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::db::schema::{reward_rules, rewards, transactions};
use crate::domain::customers::{self, Customer};
use crate::domain::ledger::format_amount;
use crate::domain::transactions::{Transaction, TransactionStatus};
use crate::domain::webhooks;
use crate::error::Error;

use super::lookup::RewardLine;
use super::{fraud, AmountKind, BeneficiaryRole, Reward, RewardRule, RewardStatus, SaleScope, Trigger};

mod limits;
use limits::within_limits;

/// The most one reward may be (also a CHECK on `rewards.amount`).
pub const MAX_REWARD: u32 = 1_000_000;

/// Why a voided reward may come back: its transaction was archived, and archiving can be
/// revoked. Re-evaluating the transaction then revives the row in place (see [`fire`]).
pub const VOID_ARCHIVED: &str = "The transaction was archived.";

/// What happened to a referred friend.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    CustomerCreated,
    CustomerApproved,
    Sale(&'a Transaction),
}

impl Event<'_> {
    fn trigger(&self) -> Trigger {
        match self {
            Event::CustomerCreated => Trigger::CustomerCreated,
            Event::CustomerApproved => Trigger::CustomerApproved,
            Event::Sale(_) => Trigger::Sale,
        }
    }

    /// `rewards.event_key`.
    fn key(&self, friend: &Customer) -> String {
        match self {
            Event::CustomerCreated => format!("customer_created:{}", friend.id),
            Event::CustomerApproved => format!("customer_approved:{}", friend.id),
            Event::Sale(sale) => format!("transaction:{}", sale.id),
        }
    }
}

/// Why a rule created no reward (or not for everyone it names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub rule_id: i64,
    pub rule: String,
    pub reason: String,
}

/// What firing the rules of one event did.
#[derive(Debug, Default)]
pub struct Fired {
    pub rewards: Vec<Reward>,
    pub notes: Vec<Note>,
    /// The referrer's key, when rules were looked at.
    pub referrer_key: Option<String>,
}

impl Fired {
    /// The rewards with the keys their JSON names them by, without reading them again:
    /// the beneficiary is the friend or the referrer fired for, the transaction the sale.
    pub fn lines(&self, friend: &Customer, sale_key: Option<&str>) -> Vec<RewardLine> {
        self.rewards
            .iter()
            .map(|reward| RewardLine {
                customer_key: if reward.beneficiary_id == friend.id {
                    friend.key.clone()
                } else {
                    self.referrer_key.clone().unwrap_or_default()
                },
                transaction_key: reward.transaction_id.and(sale_key.map(str::to_string)),
                reward: reward.clone(),
            })
            .collect()
    }
}

/// What the caller of [`fire`] already knows, so that firing does not read it again.
#[derive(Clone, Copy, Debug, Default)]
pub struct Known<'a> {
    /// The friend's referrer, as read in this transaction.
    pub referrer: Option<&'a Customer>,
    /// The event happened in this very transaction (a signup, a sale just inserted), so no
    /// reward can exist for it yet: nothing to look up or revive.
    pub new_event: bool,
    /// Whether the program has an active webhook subscription, when the caller asked in
    /// this transaction (`None`: ask).
    pub listening: Option<bool>,
}

/// Everything the rules of one event look at.
struct Context<'a> {
    event: Event<'a>,
    event_key: String,
    friend: &'a Customer,
    referrer: std::borrow::Cow<'a, Customer>,
    /// The fraud signals, read when the first reward is about to be written.
    flags: Option<Vec<String>>,
    program_id: i64,
    new_event: bool,
    now: DateTime<Utc>,
}

/// The program's enabled rules of these triggers, in id order.
fn enabled_rules(
    conn: &mut PgConnection,
    program_id: i64,
    triggers: &[Trigger],
) -> Result<Vec<RewardRule>, Error> {
    Ok(reward_rules::table
        .filter(reward_rules::program_id.eq(program_id))
        .filter(reward_rules::trigger.eq_any(triggers))
        .filter(reward_rules::enabled.eq(true))
        .order(reward_rules::id)
        .select(RewardRule::as_select())
        .load(conn)?)
}

/// Fires the program's enabled rules for `event` of `friend`; nothing when the friend has
/// no referrer. Run it inside the event's database transaction.
pub fn fire(
    conn: &mut PgConnection,
    program_id: i64,
    friend: &Customer,
    event: Event<'_>,
    now: DateTime<Utc>,
    known: Known<'_>,
) -> Result<Fired, Error> {
    if friend.referrer_id.is_none() {
        return Ok(Fired::default());
    }
    let rules = enabled_rules(conn, program_id, &[event.trigger()])?;
    fire_rules(conn, program_id, friend, event, &rules, now, known)
}

/// The rules a new referred customer would fire: "created", and "approved" when they are
/// approved from the start (a program that does not require approval), so that approval
/// rules fire for them too. Read before the signup, so that a program without such rules
/// signs up in one statement, without a transaction.
pub fn signup_rules(
    conn: &mut PgConnection,
    program_id: i64,
    approved: bool,
) -> Result<Vec<RewardRule>, Error> {
    let triggers: &[Trigger] = if approved {
        &[Trigger::CustomerCreated, Trigger::CustomerApproved]
    } else {
        &[Trigger::CustomerCreated]
    };
    enabled_rules(conn, program_id, triggers)
}

/// Fires [`signup_rules`] for the customer just created (in the signup's transaction);
/// `known.referrer` is their referrer.
pub fn on_signup(
    conn: &mut PgConnection,
    program_id: i64,
    friend: &Customer,
    rules: &[RewardRule],
    known: Known<'_>,
) -> Result<(), Error> {
    let now = Utc::now();
    let known = Known {
        new_event: true,
        ..known
    };
    for (trigger, event) in [
        (Trigger::CustomerCreated, Event::CustomerCreated),
        (Trigger::CustomerApproved, Event::CustomerApproved),
    ] {
        let of_trigger: Vec<RewardRule> = rules
            .iter()
            .filter(|rule| rule.trigger == trigger)
            .cloned()
            .collect();
        fire_rules(conn, program_id, friend, event, &of_trigger, now, known)?;
    }
    Ok(())
}

fn fire_rules(
    conn: &mut PgConnection,
    program_id: i64,
    friend: &Customer,
    event: Event<'_>,
    rules: &[RewardRule],
    now: DateTime<Utc>,
    known: Known<'_>,
) -> Result<Fired, Error> {
    let Some(referrer_id) = friend.referrer_id else {
        return Ok(Fired::default());
    };
    if rules.is_empty() {
        return Ok(Fired::default());
    }
    let referrer = match known.referrer {
        Some(referrer) if referrer.id == referrer_id => std::borrow::Cow::Borrowed(referrer),
        _ => std::borrow::Cow::Owned(customers::find(conn, program_id, referrer_id)?),
    };
    let mut context = Context {
        event_key: event.key(friend),
        event,
        friend,
        referrer,
        flags: None,
        program_id,
        new_event: known.new_event,
        now,
    };
    let mut fired = Fired {
        referrer_key: Some(context.referrer.key.clone()),
        ..Fired::default()
    };
    let mut new_rewards: Vec<(&RewardRule, Candidate)> = Vec::new();
    for rule in rules {
        let mut note = |reason: String| {
            fired.notes.push(Note {
                rule_id: rule.id,
                rule: rule.name.clone(),
                reason,
            })
        };
        if let Err(reason) = sale_matches(conn, rule, &context)? {
            note(reason);
            continue;
        }
        let (candidates, reasons) = candidates(conn, rule, &context)?;
        reasons.into_iter().for_each(&mut note);
        if candidates.is_empty() {
            continue;
        }
        let (allowed, reasons) = within_limits(conn, rule, &context, candidates)?;
        reasons.into_iter().for_each(&mut note);
        for candidate in allowed {
            if candidate.revive {
                fired.rewards.extend(revive(conn, rule, &mut context, candidate)?);
            } else {
                new_rewards.push((rule, candidate));
            }
        }
    }
    // The new rewards of every rule in one statement (each rule's limits were checked under
    // its locks, which the transaction keeps until it ends).
    fired.rewards.extend(insert(conn, &mut context, new_rewards)?);
    fired.rewards.sort_by_key(|reward| reward.id);
    // A reward revived in place (a revoked archive) is announced as created again.
    let sale_key = match event {
        Event::Sale(sale) => Some(sale.key.as_str()),
        _ => None,
    };
    let lines = fired.lines(friend, sale_key);
    super::events::announce_lines(conn, webhooks::Event::RewardCreated, &lines, known.listening)?;
    Ok(fired)
}

/// Whether a sale rule's conditions hold for the event (always for other triggers), or
/// why not.
fn sale_matches(
    conn: &mut PgConnection,
    rule: &RewardRule,
    context: &Context<'_>,
) -> Result<Result<(), String>, Error> {
    let Event::Sale(sale) = context.event else {
        return Ok(Ok(()));
    };
    if let Some(wanted) = &rule.product_type {
        if sale.product_type.as_deref() != Some(wanted.as_str()) {
            return Ok(Err(format!("Only sales of product type \"{wanted}\" count.")));
        }
    }
    if let Some(minimum) = &rule.min_sale_amount {
        if &sale.amount < minimum {
            return Ok(Err(format!(
                "The sale is below the minimum of {}.",
                format_amount(minimum, true)
            )));
        }
    }
    if let Some(days) = rule.within_days {
        if sale.created_at > context.friend.created_at + Duration::days(i64::from(days)) {
            return Ok(Err(format!(
                "The sale came more than {days} days after the friend signed up."
            )));
        }
    }
    if rule.amount_kind == AmountKind::Percent && sale.amount_units != rule.amount_units {
        return Ok(Err(format!(
            "The sale is in {}; this rule pays a percentage of {} sales only.",
            sale.amount_units, rule.amount_units
        )));
    }
    let allowed = match rule.sale_scope {
        Some(SaleScope::First) => 1,
        Some(SaleScope::FirstN) => i64::from(rule.sale_count.unwrap_or(1)),
        Some(SaleScope::Every) | None => return Ok(Ok(())),
    };
    // The friend's row lock serialises their concurrent sales, and the count after it sees
    // every active sale committed before (and this one): a sale is "first" in the order the
    // lock admits them. Counting by id instead would let two sales both be first — the later
    // id committing first cannot see the earlier one, and the earlier one does not count the
    // later id. A restored (revoke-archive) sale also counts the sales made since.
    customers::lock_for_rewards(conn, context.friend.id)?;
    let number: i64 = transactions::table
        .filter(transactions::customer_id.eq(context.friend.id))
        .filter(transactions::status.eq(TransactionStatus::Active))
        .count()
        .get_result(conn)?;
    if number > allowed {
        return Ok(Err(if allowed == 1 {
            "Only the friend's first sale counts.".to_string()
        } else {
            format!("Only the friend's first {allowed} sales count.")
        }));
    }
    Ok(Ok(()))
}

/// A reward about to be written.
#[derive(Debug)]
struct Candidate {
    role: BeneficiaryRole,
    beneficiary_id: i64,
    amount: BigDecimal,
    /// A row voided by archiving exists for it: it is revived rather than inserted.
    revive: bool,
}

/// The rewards the rule would give for this event, before limits: one per side it pays,
/// leaving out sides that already have a reward for this event.
fn candidates(
    conn: &mut PgConnection,
    rule: &RewardRule,
    context: &Context<'_>,
) -> Result<(Vec<Candidate>, Vec<String>), Error> {
    // All three columns of `rewards_once_per_event`, so that the lookup is one index probe
    // however many rewards the rule has (`=` rather than `IN`: Diesel keeps the statement
    // prepared, it is not planned again on every sale). An event of this transaction has
    // no rewards yet.
    let existing: Vec<(i64, RewardStatus, Option<String>)> = if context.new_event {
        Vec::new()
    } else {
        rewards::table
            .filter(rewards::rule_id.eq(rule.id))
            .filter(
                rewards::beneficiary_id
                    .eq(context.referrer.id)
                    .or(rewards::beneficiary_id.eq(context.friend.id)),
            )
            .filter(rewards::event_key.eq(&context.event_key))
            .select((rewards::beneficiary_id, rewards::status, rewards::void_reason))
            .load(conn)?
    };
    let mut found = Vec::new();
    let mut reasons = Vec::new();
    let sides = [
        (
            BeneficiaryRole::Referrer,
            context.referrer.as_ref(),
            &rule.referrer_amount,
        ),
        (BeneficiaryRole::Friend, context.friend, &rule.friend_amount),
    ];
    for (role, beneficiary, amount) in sides {
        let Some(amount) = amount else { continue };
        let revive = match existing.iter().find(|(id, _, _)| *id == beneficiary.id) {
            None => false,
            Some((_, RewardStatus::Voided, Some(reason))) if reason == VOID_ARCHIVED => true,
            Some(_) => continue,
        };
        if beneficiary.is_deleted() {
            reasons.push(format!("The {role} is deleted."));
            continue;
        }
        match reward_amount(rule, amount, context) {
            Ok(amount) => found.push(Candidate {
                role,
                beneficiary_id: beneficiary.id,
                amount,
                revive,
            }),
            Err(reason) => reasons.push(reason),
        }
    }
    Ok((found, reasons))
}

/// The reward for one side: the fixed amount, or the percentage of the sale rounded half
/// up to the unit's decimals (2 for currencies, 4 for other units) and capped by the
/// rule's maximum.
fn reward_amount(
    rule: &RewardRule,
    amount: &BigDecimal,
    context: &Context<'_>,
) -> Result<BigDecimal, String> {
    let decimals = if rule.is_currency { 2 } else { 4 };
    let mut value = match (rule.amount_kind, context.event) {
        (AmountKind::Percent, Event::Sale(sale)) => {
            (&sale.amount * amount / BigDecimal::from(100)).with_scale_round(decimals, RoundingMode::HalfUp)
        }
        _ => amount.with_scale_round(decimals, RoundingMode::HalfUp),
    };
    if let Some(max) = &rule.max_reward {
        if &value > max {
            value = max.with_scale_round(decimals, RoundingMode::Down);
        }
    }
    if value <= BigDecimal::zero() {
        return Err("The reward rounds to zero.".to_string());
    }
    if value > MAX_REWARD {
        return Err("The reward would exceed 1,000,000, the most one reward may be.".to_string());
    }
    Ok(value)
}

/// The event's fraud signals, read once per event and only for one that earns something.
fn flags_of(conn: &mut PgConnection, context: &mut Context<'_>) -> Result<Vec<String>, Error> {
    if context.flags.is_none() {
        context.flags = Some(fraud::signals(
            conn,
            context.program_id,
            &context.referrer,
            context.friend,
            context.now,
        )?);
    }
    Ok(context.flags.clone().unwrap_or_default())
}

fn snapshot_of(rule: &RewardRule) -> Result<serde_json::Value, Error> {
    serde_json::to_value(rule).map_err(|error| Error::Internal(error.into()))
}

/// Writes new rewards: pending, held the rule's `hold_days`, needing approval when the
/// rule says so or a fraud signal holds them, each with its rule's snapshot.
fn insert(
    conn: &mut PgConnection,
    context: &mut Context<'_>,
    new: Vec<(&RewardRule, Candidate)>,
) -> Result<Vec<Reward>, Error> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let flags = flags_of(conn, context)?;
    let transaction_id = match context.event {
        Event::Sale(sale) => Some(sale.id),
        _ => None,
    };
    let snapshots = new
        .iter()
        .map(|(rule, _)| snapshot_of(rule))
        .collect::<Result<Vec<_>, Error>>()?;
    let rows: Vec<_> = new
        .iter()
        .zip(&snapshots)
        .map(|((rule, candidate), snapshot)| {
            (
                rewards::program_id.eq(rule.program_id),
                rewards::rule_id.eq(rule.id),
                rewards::rule_snapshot.eq(snapshot),
                rewards::beneficiary_id.eq(candidate.beneficiary_id),
                rewards::role.eq(candidate.role),
                rewards::referrer_id.eq(context.referrer.id),
                rewards::friend_id.eq(context.friend.id),
                rewards::transaction_id.eq(transaction_id),
                rewards::event_key.eq(&context.event_key),
                rewards::amount.eq(&candidate.amount),
                rewards::amount_units.eq(&rule.amount_units),
                rewards::is_currency.eq(rule.is_currency),
                rewards::hold_until.eq(context.now + Duration::days(i64::from(rule.hold_days))),
                rewards::needs_approval.eq(rule.needs_approval || !flags.is_empty()),
                rewards::flags.eq(&flags),
                rewards::created_at.eq(context.now),
                rewards::updated_at.eq(context.now),
            )
        })
        .collect();
    Ok(diesel::insert_into(rewards::table)
        .values(rows)
        .on_conflict_do_nothing()
        .returning(Reward::as_returning())
        .get_results(conn)?)
}

/// Brings back a reward voided by archiving, as [`insert`] would write it now.
fn revive(
    conn: &mut PgConnection,
    rule: &RewardRule,
    context: &mut Context<'_>,
    candidate: Candidate,
) -> Result<Option<Reward>, Error> {
    let flags = flags_of(conn, context)?;
    let snapshot = snapshot_of(rule)?;
    let hold_until = context.now + Duration::days(i64::from(rule.hold_days));
    let needs_approval = rule.needs_approval || !flags.is_empty();
    Ok(diesel::update(
        rewards::table
            .filter(rewards::rule_id.eq(rule.id))
            .filter(rewards::beneficiary_id.eq(candidate.beneficiary_id))
            .filter(rewards::event_key.eq(&context.event_key))
            .filter(rewards::status.eq(RewardStatus::Voided)),
    )
    .set((
        rewards::status.eq(RewardStatus::Pending),
        rewards::void_reason.eq(None::<String>),
        rewards::rule_snapshot.eq(&snapshot),
        rewards::amount.eq(&candidate.amount),
        rewards::hold_until.eq(hold_until),
        rewards::needs_approval.eq(needs_approval),
        rewards::flags.eq(&flags),
        rewards::updated_at.eq(context.now),
    ))
    .returning(Reward::as_returning())
    .get_result(conn)
    .optional()?)
}
