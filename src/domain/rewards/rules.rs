//! Reward rules of a program: the parsed input with a clear message per field, create,
//! edit (bumps `version`: an edit applies to future events only, rewards keep the snapshot
//! of the rule as it fired), enable/disable, list and find. Only admins call the writers;
//! the routes say so.

use bigdecimal::BigDecimal;
use chrono::Utc;
use diesel::prelude::*;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{AmountKind, RewardRule, SaleScope, Trigger};
use crate::db::schema::reward_rules;
use crate::domain::ledger::{parse_units, CURRENCY_DECIMALS, UNIT_DECIMALS};
use crate::domain::{audit, has_control_chars, Actor};
use crate::error::{Error, FieldErrors};

mod parse;

pub use parse::{parse_decimal, Earner};

/// The largest amount one reward may be (also a CHECK on `rewards.amount`).
pub const MAX_REWARD: u32 = 1_000_000;
/// The largest budget a rule may have: generous, but a typo of many zeros is refused.
pub const MAX_BUDGET: u64 = 10_000_000_000;
/// The largest sale amount a transaction may have (also a CHECK on `transactions.amount`).
pub const MAX_SALE: u32 = 100_000_000;
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_PRODUCT_TYPE_CHARS: usize = 255;

/// A rule's form as typed (every value text, checkboxes present when ticked). The
/// dashboard deserializes its form into it; [`RuleInput::parse`] checks it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RuleFields {
    pub name: String,
    /// `customer_created`, `customer_approved` or `sale`.
    pub trigger: String,
    /// Sale rules: `first`, `every` or `first_n`.
    pub sale_scope: String,
    pub sale_count: String,
    pub within_days: String,
    pub min_sale_amount: String,
    pub product_type: String,
    /// `referrer`, `friend` or `both`.
    pub earner: String,
    /// `fixed` or `percent`.
    pub amount_kind: String,
    pub referrer_amount: String,
    pub friend_amount: String,
    pub is_currency: Option<String>,
    pub currency: String,
    pub unit_name: String,
    pub max_reward: String,
    pub limit_per_referrer: String,
    pub limit_per_referrer_month: String,
    pub budget: String,
    pub hold_days: String,
    pub needs_approval: Option<String>,
    pub enabled: Option<String>,
}

impl RuleFields {
    /// A fresh form: what most programs start with.
    pub fn fresh() -> RuleFields {
        RuleFields {
            trigger: Trigger::Sale.as_str().into(),
            sale_scope: SaleScope::First.as_str().into(),
            earner: Earner::Referrer.as_str().into(),
            amount_kind: AmountKind::Fixed.as_str().into(),
            is_currency: Some("on".into()),
            currency: "USD".into(),
            hold_days: "14".into(),
            needs_approval: Some("on".into()),
            enabled: Some("on".into()),
            ..RuleFields::default()
        }
    }

    /// The form of a stored rule, to edit it.
    pub fn of(rule: &RewardRule) -> RuleFields {
        let text = |value: &Option<BigDecimal>| value.as_ref().map(plain).unwrap_or_default();
        let number = |value: Option<i32>| value.map(|n| n.to_string()).unwrap_or_default();
        let earner = match (&rule.referrer_amount, &rule.friend_amount) {
            (Some(_), Some(_)) => Earner::Both,
            (None, Some(_)) => Earner::Friend,
            _ => Earner::Referrer,
        };
        RuleFields {
            name: rule.name.clone(),
            trigger: rule.trigger.as_str().into(),
            sale_scope: rule
                .sale_scope
                .map_or(SaleScope::First.as_str(), |scope| scope.as_str())
                .into(),
            sale_count: number(rule.sale_count),
            within_days: number(rule.within_days),
            min_sale_amount: text(&rule.min_sale_amount),
            product_type: rule.product_type.clone().unwrap_or_default(),
            earner: earner.as_str().into(),
            amount_kind: rule.amount_kind.as_str().into(),
            referrer_amount: text(&rule.referrer_amount),
            friend_amount: text(&rule.friend_amount),
            is_currency: rule.is_currency.then(|| "on".into()),
            currency: if rule.is_currency {
                rule.amount_units.clone()
            } else {
                "USD".into()
            },
            unit_name: if rule.is_currency {
                String::new()
            } else {
                rule.amount_units.clone()
            },
            max_reward: text(&rule.max_reward),
            limit_per_referrer: number(rule.limit_per_referrer),
            limit_per_referrer_month: number(rule.limit_per_referrer_month),
            budget: text(&rule.budget),
            hold_days: rule.hold_days.to_string(),
            needs_approval: rule.needs_approval.then(|| "on".into()),
            enabled: rule.enabled.then(|| "on".into()),
        }
    }

    pub fn is_currency(&self) -> bool {
        self.is_currency.is_some()
    }

    pub fn needs_approval(&self) -> bool {
        self.needs_approval.is_some()
    }

    pub fn enabled(&self) -> bool {
        self.enabled.is_some()
    }
}

/// A decimal without trailing zeros (`10`, `2.5`), as a form shows it.
pub fn plain(value: &BigDecimal) -> String {
    value.normalized().to_plain_string()
}

/// A checked rule. Built only by [`RuleInput::parse`], so it satisfies the table's CHECKs.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleInput {
    pub name: String,
    pub trigger: Trigger,
    pub sale_scope: Option<SaleScope>,
    pub sale_count: Option<i32>,
    pub within_days: Option<i32>,
    pub min_sale_amount: Option<BigDecimal>,
    pub product_type: Option<String>,
    pub amount_kind: AmountKind,
    pub referrer_amount: Option<BigDecimal>,
    pub friend_amount: Option<BigDecimal>,
    pub amount_units: String,
    pub is_currency: bool,
    pub max_reward: Option<BigDecimal>,
    pub limit_per_referrer: Option<i32>,
    pub limit_per_referrer_month: Option<i32>,
    pub budget: Option<BigDecimal>,
    pub hold_days: i32,
    pub needs_approval: bool,
    pub enabled: bool,
}

impl RuleInput {
    /// Checks every field; each problem is reported against its field.
    pub fn parse(fields: &RuleFields) -> Result<RuleInput, Error> {
        parse::parse(fields)
    }

    /// The columns as stored and audited.
    fn settings(&self) -> Value {
        json!({
            "name": self.name,
            "trigger": self.trigger.as_str(),
            "sale_scope": self.sale_scope.map(|scope| scope.as_str()),
            "sale_count": self.sale_count,
            "within_days": self.within_days,
            "min_sale_amount": self.min_sale_amount.as_ref().map(plain),
            "product_type": self.product_type,
            "amount_kind": self.amount_kind.as_str(),
            "referrer_amount": self.referrer_amount.as_ref().map(plain),
            "friend_amount": self.friend_amount.as_ref().map(plain),
            "amount_units": self.amount_units,
            "is_currency": self.is_currency,
            "max_reward": self.max_reward.as_ref().map(plain),
            "limit_per_referrer": self.limit_per_referrer,
            "limit_per_referrer_month": self.limit_per_referrer_month,
            "budget": self.budget.as_ref().map(plain),
            "hold_days": self.hold_days,
            "needs_approval": self.needs_approval,
            "enabled": self.enabled,
        })
    }

    fn of(rule: &RewardRule) -> RuleInput {
        RuleInput {
            name: rule.name.clone(),
            trigger: rule.trigger,
            sale_scope: rule.sale_scope,
            sale_count: rule.sale_count,
            within_days: rule.within_days,
            min_sale_amount: rule.min_sale_amount.clone(),
            product_type: rule.product_type.clone(),
            amount_kind: rule.amount_kind,
            referrer_amount: rule.referrer_amount.clone(),
            friend_amount: rule.friend_amount.clone(),
            amount_units: rule.amount_units.clone(),
            is_currency: rule.is_currency,
            max_reward: rule.max_reward.clone(),
            limit_per_referrer: rule.limit_per_referrer,
            limit_per_referrer_month: rule.limit_per_referrer_month,
            budget: rule.budget.clone(),
            hold_days: rule.hold_days,
            needs_approval: rule.needs_approval,
            enabled: rule.enabled,
        }
    }
}

/// The decimals an amount in these units may have.
pub fn decimals_for(is_currency: bool) -> usize {
    if is_currency {
        CURRENCY_DECIMALS
    } else {
        UNIT_DECIMALS
    }
}

/// Checks a unit (re-exported for the settings that name one).
pub fn units(raw: &str, is_currency: bool) -> Result<String, String> {
    parse_units(raw, is_currency)
}

/// A one-line name: trimmed, 1 to [`MAX_NAME_CHARS`] characters, no control characters.
pub(crate) fn one_line(raw: &str, max: usize) -> Option<String> {
    let value = raw.trim();
    (!value.is_empty() && value.chars().count() <= max && !has_control_chars(value))
        .then(|| value.to_string())
}

/// The program's rules, enabled first, then by name.
pub fn list(conn: &mut PgConnection, program_id: i64) -> Result<Vec<RewardRule>, Error> {
    Ok(reward_rules::table
        .filter(reward_rules::program_id.eq(program_id))
        .order((reward_rules::enabled.desc(), reward_rules::name, reward_rules::id))
        .select(RewardRule::as_select())
        .load(conn)?)
}

/// One rule of the program (another program's rule is not found).
pub fn find(conn: &mut PgConnection, program_id: i64, id: i64) -> Result<RewardRule, Error> {
    Ok(reward_rules::table
        .filter(reward_rules::program_id.eq(program_id))
        .filter(reward_rules::id.eq(id))
        .select(RewardRule::as_select())
        .first(conn)?)
}

fn record(
    conn: &mut PgConnection,
    actor: &Actor,
    rule: &RewardRule,
    action: &str,
    before: Option<Value>,
    after: Option<Value>,
) -> Result<(), Error> {
    audit::record(
        conn,
        actor,
        audit::Change {
            program_id: Some(rule.program_id),
            action,
            subject_type: "reward_rule",
            subject_id: Some(rule.id.to_string()),
            customer_id: None,
            before,
            after,
        },
    )
}

pub fn create(
    conn: &mut PgConnection,
    actor: &Actor,
    program_id: i64,
    input: RuleInput,
) -> Result<RewardRule, Error> {
    conn.transaction(|conn| {
        let rule = diesel::insert_into(reward_rules::table)
            .values((reward_rules::program_id.eq(program_id), values(&input)))
            .returning(RewardRule::as_returning())
            .get_result(conn)?;
        record(
            conn,
            actor,
            &rule,
            "reward_rule.create",
            None,
            Some(input.settings()),
        )?;
        Ok(rule)
    })
}

/// Saves an edit and bumps the version; rewards already fired keep their snapshot. Saving
/// unchanged settings writes nothing.
pub fn update(
    conn: &mut PgConnection,
    actor: &Actor,
    program_id: i64,
    id: i64,
    input: RuleInput,
) -> Result<RewardRule, Error> {
    conn.transaction(|conn| {
        let before = reward_rules::table
            .filter(reward_rules::program_id.eq(program_id))
            .filter(reward_rules::id.eq(id))
            .select(RewardRule::as_select())
            .for_update()
            .first(conn)?;
        let old = RuleInput::of(&before);
        if old == input {
            return Ok(before);
        }
        let after = diesel::update(reward_rules::table.find(id))
            .set((
                values(&input),
                reward_rules::version.eq(before.version + 1),
                reward_rules::updated_at.eq(Utc::now()),
            ))
            .returning(RewardRule::as_returning())
            .get_result(conn)?;
        let (old, new) = changed(old.settings(), input.settings());
        record(conn, actor, &after, "reward_rule.update", Some(old), Some(new))?;
        Ok(after)
    })
}

/// Turns a rule on or off (no new version: what it would pay is unchanged).
pub fn set_enabled(
    conn: &mut PgConnection,
    actor: &Actor,
    program_id: i64,
    id: i64,
    enabled: bool,
) -> Result<RewardRule, Error> {
    conn.transaction(|conn| {
        let before = find(conn, program_id, id)?;
        if before.enabled == enabled {
            return Ok(before);
        }
        let after = diesel::update(reward_rules::table.find(id))
            .set((
                reward_rules::enabled.eq(enabled),
                reward_rules::updated_at.eq(Utc::now()),
            ))
            .returning(RewardRule::as_returning())
            .get_result(conn)?;
        let action = if enabled {
            "reward_rule.enable"
        } else {
            "reward_rule.disable"
        };
        record(conn, actor, &after, action, None, None)?;
        Ok(after)
    })
}

/// The keys whose values differ, before and after.
fn changed(old: Value, new: Value) -> (Value, Value) {
    let (Value::Object(old), Value::Object(new)) = (old, new) else {
        return (Value::Null, Value::Null);
    };
    let keys: Vec<&String> = new.keys().filter(|key| old.get(*key) != new.get(*key)).collect();
    let pick = |map: &serde_json::Map<String, Value>| {
        Value::Object(
            keys.iter()
                .map(|key| ((*key).clone(), map.get(*key).cloned().unwrap_or(Value::Null)))
                .collect(),
        )
    };
    (pick(&old), pick(&new))
}

type Values<'a> = (
    (
        diesel::dsl::Eq<reward_rules::name, &'a String>,
        diesel::dsl::Eq<reward_rules::trigger, Trigger>,
        diesel::dsl::Eq<reward_rules::sale_scope, Option<SaleScope>>,
        diesel::dsl::Eq<reward_rules::sale_count, Option<i32>>,
        diesel::dsl::Eq<reward_rules::within_days, Option<i32>>,
        diesel::dsl::Eq<reward_rules::min_sale_amount, &'a Option<BigDecimal>>,
        diesel::dsl::Eq<reward_rules::product_type, &'a Option<String>>,
        diesel::dsl::Eq<reward_rules::amount_kind, AmountKind>,
        diesel::dsl::Eq<reward_rules::referrer_amount, &'a Option<BigDecimal>>,
        diesel::dsl::Eq<reward_rules::friend_amount, &'a Option<BigDecimal>>,
    ),
    (
        diesel::dsl::Eq<reward_rules::amount_units, &'a String>,
        diesel::dsl::Eq<reward_rules::is_currency, bool>,
        diesel::dsl::Eq<reward_rules::max_reward, &'a Option<BigDecimal>>,
        diesel::dsl::Eq<reward_rules::limit_per_referrer, Option<i32>>,
        diesel::dsl::Eq<reward_rules::limit_per_referrer_month, Option<i32>>,
        diesel::dsl::Eq<reward_rules::budget, &'a Option<BigDecimal>>,
        diesel::dsl::Eq<reward_rules::hold_days, i32>,
        diesel::dsl::Eq<reward_rules::needs_approval, bool>,
        diesel::dsl::Eq<reward_rules::enabled, bool>,
    ),
);

/// The input's columns, for an insert or an update.
fn values(input: &RuleInput) -> Values<'_> {
    (
        (
            reward_rules::name.eq(&input.name),
            reward_rules::trigger.eq(input.trigger),
            reward_rules::sale_scope.eq(input.sale_scope),
            reward_rules::sale_count.eq(input.sale_count),
            reward_rules::within_days.eq(input.within_days),
            reward_rules::min_sale_amount.eq(&input.min_sale_amount),
            reward_rules::product_type.eq(&input.product_type),
            reward_rules::amount_kind.eq(input.amount_kind),
            reward_rules::referrer_amount.eq(&input.referrer_amount),
            reward_rules::friend_amount.eq(&input.friend_amount),
        ),
        (
            reward_rules::amount_units.eq(&input.amount_units),
            reward_rules::is_currency.eq(input.is_currency),
            reward_rules::max_reward.eq(&input.max_reward),
            reward_rules::limit_per_referrer.eq(input.limit_per_referrer),
            reward_rules::limit_per_referrer_month.eq(input.limit_per_referrer_month),
            reward_rules::budget.eq(&input.budget),
            reward_rules::hold_days.eq(input.hold_days),
            reward_rules::needs_approval.eq(input.needs_approval),
            reward_rules::enabled.eq(input.enabled),
        ),
    )
}

pub(super) fn push(fields: &mut FieldErrors, field: &str, message: impl Into<String>) {
    fields.entry(field.to_string()).or_default().push(message.into());
}

/// How a rule reads in words, for the rules page.
impl RewardRule {
    pub fn trigger_text(&self) -> String {
        match self.trigger {
            Trigger::CustomerCreated => "The referred friend signs up".into(),
            Trigger::CustomerApproved => "The referred friend is approved".into(),
            Trigger::Sale => {
                let mut text = match (self.sale_scope, self.sale_count) {
                    (Some(SaleScope::Every), _) => "Every sale of the friend".to_string(),
                    (Some(SaleScope::FirstN), Some(count)) => format!("The friend's first {count} sales"),
                    _ => "The friend's first sale".to_string(),
                };
                if let Some(days) = self.within_days {
                    text.push_str(&format!(", within {days} days of signing up"));
                }
                if let Some(min) = &self.min_sale_amount {
                    text.push_str(&format!(", of at least {}", plain(min)));
                }
                if let Some(product_type) = &self.product_type {
                    text.push_str(&format!(", product type {product_type}"));
                }
                text
            }
        }
    }

    fn amount_of(&self, amount: &Option<BigDecimal>) -> Option<String> {
        let amount = amount.as_ref()?;
        Some(match self.amount_kind {
            AmountKind::Fixed => format!("{} {}", plain(amount), self.amount_units),
            AmountKind::Percent => {
                let mut text = format!("{}% of the sale", plain(amount));
                if let Some(max) = &self.max_reward {
                    text.push_str(&format!(" (at most {} {})", plain(max), self.amount_units));
                }
                text
            }
        })
    }

    /// `Referrer: 10 USD · Friend: 5 USD`.
    pub fn earns_text(&self) -> String {
        let referrer = self
            .amount_of(&self.referrer_amount)
            .map(|text| format!("Referrer: {text}"));
        let friend = self
            .amount_of(&self.friend_amount)
            .map(|text| format!("Friend: {text}"));
        referrer.into_iter().chain(friend).collect::<Vec<_>>().join(" · ")
    }

    /// The limits and budget in words; empty when there are none.
    pub fn limits_text(&self) -> String {
        let mut parts = Vec::new();
        if let Some(limit) = self.limit_per_referrer {
            parts.push(format!("{limit} per referrer"));
        }
        if let Some(limit) = self.limit_per_referrer_month {
            parts.push(format!("{limit} per referrer a month"));
        }
        if let Some(budget) = &self.budget {
            parts.push(format!("budget {} {}", plain(budget), self.amount_units));
        }
        parts.join(", ")
    }

    /// `14-day hold, manual approval`.
    pub fn review_text(&self) -> String {
        let hold = match self.hold_days {
            0 => "no hold".to_string(),
            1 => "1-day hold".to_string(),
            days => format!("{days}-day hold"),
        };
        if self.needs_approval {
            format!("{hold}, manual approval")
        } else {
            format!("{hold}, credited automatically")
        }
    }
}
