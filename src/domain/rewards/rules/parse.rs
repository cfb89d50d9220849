//! [`RuleInput::parse`]: every field of the rule form checked, with a message a person can
//! act on next to the field. The CHECKs of `reward_rules` are the last line behind it.

use std::str::FromStr;

use bigdecimal::{BigDecimal, Zero};

use super::{
    decimals_for, one_line, push, units, RuleFields, RuleInput, MAX_BUDGET, MAX_NAME_CHARS,
    MAX_PRODUCT_TYPE_CHARS, MAX_REWARD, MAX_SALE,
};
use crate::db::text_enum;
use crate::domain::rewards::{AmountKind, SaleScope, Trigger};
use crate::error::{Error, FieldErrors};

text_enum! {
    /// Who a rule rewards (a form choice; stored as which amounts are set).
    pub enum Earner {
        Referrer = "referrer",
        Friend = "friend",
        Both = "both",
    }
}

/// A plain positive decimal with at most `decimals` digits after the point and at most
/// `max`: no sign, exponent, separators or spaces inside.
pub fn parse_decimal(raw: &str, decimals: usize, max: &BigDecimal) -> Result<BigDecimal, String> {
    let raw = raw.trim();
    let (whole, fraction) = raw.split_once('.').unwrap_or((raw, ""));
    let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if raw.len() > 32 || whole.is_empty() || !digits(whole) || !digits(fraction) || raw.ends_with('.') {
        return Err("Enter a plain number such as 10 or 10.50.".into());
    }
    if fraction.len() > decimals {
        return Err(format!("Use at most {decimals} decimals."));
    }
    let value =
        BigDecimal::from_str(raw).map_err(|_| "Enter a plain number such as 10 or 10.50.".to_string())?;
    if value <= BigDecimal::zero() {
        return Err("Enter an amount above zero.".into());
    }
    if &value > max {
        return Err(format!("Enter at most {}.", grouped(max)));
    }
    Ok(value)
}

fn grouped(value: &BigDecimal) -> String {
    let text = value.normalized().to_plain_string();
    let mut out = String::new();
    for (index, digit) in text.chars().enumerate() {
        if index > 0 && (text.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A whole number in `min..=max`; empty is `None`.
fn optional_count(
    fields: &mut FieldErrors,
    field: &str,
    raw: &str,
    min: i32,
    max: i32,
    message: &str,
) -> Option<i32> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    match raw.parse::<i32>() {
        Ok(value) if (min..=max).contains(&value) => Some(value),
        _ => {
            push(fields, field, message);
            None
        }
    }
}

fn optional_decimal(
    fields: &mut FieldErrors,
    field: &str,
    raw: &str,
    decimals: usize,
    max: &BigDecimal,
) -> Option<BigDecimal> {
    if raw.trim().is_empty() {
        return None;
    }
    parse_decimal(raw, decimals, max)
        .map_err(|message| push(fields, field, message))
        .ok()
}

/// Refuses a value the chosen trigger would never read, rather than dropping it unseen.
fn sale_only(fields: &mut FieldErrors, field: &str, raw: &str, what: &str) {
    if !raw.trim().is_empty() {
        push(
            fields,
            field,
            format!("Only sale rules look at {what}: clear it or choose the sale trigger."),
        );
    }
}

/// The sale options: scope, count, within days, minimum amount, product type.
struct SaleOptions {
    scope: Option<SaleScope>,
    count: Option<i32>,
    within_days: Option<i32>,
    min_amount: Option<BigDecimal>,
    product_type: Option<String>,
}

fn sale_options(fields: &mut FieldErrors, form: &RuleFields, trigger: Option<Trigger>) -> SaleOptions {
    let mut options = SaleOptions {
        scope: None,
        count: None,
        within_days: None,
        min_amount: None,
        product_type: None,
    };
    if trigger != Some(Trigger::Sale) {
        if trigger.is_some() {
            sale_only(fields, "sale_count", &form.sale_count, "the number of sales");
            sale_only(fields, "within_days", &form.within_days, "days since signup");
            sale_only(fields, "min_sale_amount", &form.min_sale_amount, "a minimum sale");
            sale_only(fields, "product_type", &form.product_type, "a product type");
        }
        return options;
    }
    options.scope = SaleScope::parse(form.sale_scope.trim());
    match options.scope {
        None => push(
            fields,
            "sale_scope",
            "Choose which sales count: the first, every one, or the first N.",
        ),
        Some(SaleScope::FirstN) => {
            options.count = optional_count(
                fields,
                "sale_count",
                &form.sale_count,
                1,
                1000,
                "Enter a whole number of sales from 1 to 1000.",
            );
            if form.sale_count.trim().is_empty() {
                push(
                    fields,
                    "sale_count",
                    "Enter how many of the friend's first sales earn a reward (1 to 1000).",
                );
            }
        }
        Some(_) => sale_only_with_scope(fields, &form.sale_count),
    }
    options.within_days = optional_count(
        fields,
        "within_days",
        &form.within_days,
        1,
        3650,
        "Enter a whole number of days from 1 to 3650, or leave it empty for no time limit.",
    );
    options.min_amount = optional_decimal(
        fields,
        "min_sale_amount",
        &form.min_sale_amount,
        2,
        &BigDecimal::from(MAX_SALE),
    );
    let product_type = form.product_type.trim();
    if !product_type.is_empty() {
        options.product_type = one_line(product_type, MAX_PRODUCT_TYPE_CHARS);
        if options.product_type.is_none() {
            push(
                fields,
                "product_type",
                format!("Use at most {MAX_PRODUCT_TYPE_CHARS} characters on one line."),
            );
        }
    }
    options
}

fn sale_only_with_scope(fields: &mut FieldErrors, raw: &str) {
    if !raw.trim().is_empty() {
        push(
            fields,
            "sale_count",
            "A number of sales applies to \"the first N sales\" only: clear it or choose that option.",
        );
    }
}

/// The amounts of the chosen sides; a side not chosen must be left empty.
fn amounts(
    fields: &mut FieldErrors,
    form: &RuleFields,
    kind: Option<AmountKind>,
    is_currency: bool,
) -> (Option<BigDecimal>, Option<BigDecimal>) {
    let earner = Earner::parse(form.earner.trim());
    if earner.is_none() {
        push(
            fields,
            "earner",
            "Choose who earns: the referrer, the friend, or both.",
        );
    }
    let (decimals, max, what) = match kind {
        Some(AmountKind::Percent) => (4, BigDecimal::from(100), "a percentage above 0 and at most 100"),
        _ => (
            decimals_for(is_currency),
            BigDecimal::from(MAX_REWARD),
            "an amount",
        ),
    };
    let mut side = |field: &str, raw: &str, earns: bool, who: &str| -> Option<BigDecimal> {
        earner?;
        if !earns {
            if !raw.trim().is_empty() {
                push(
                    fields,
                    field,
                    format!(
                        "The {who} earns nothing under this rule: clear it or choose who earns accordingly."
                    ),
                );
            }
            return None;
        }
        if raw.trim().is_empty() {
            push(fields, field, format!("Enter {what} for the {who}."));
            return None;
        }
        optional_decimal(fields, field, raw, decimals, &max)
    };
    let referrer = side(
        "referrer_amount",
        &form.referrer_amount,
        matches!(earner, Some(Earner::Referrer | Earner::Both)),
        "referrer",
    );
    let friend = side(
        "friend_amount",
        &form.friend_amount,
        matches!(earner, Some(Earner::Friend | Earner::Both)),
        "friend",
    );
    (referrer, friend)
}

/// The amount kind, its units and the maximum per reward.
fn kind_and_units(
    fields: &mut FieldErrors,
    form: &RuleFields,
    trigger: Option<Trigger>,
) -> (Option<AmountKind>, Option<String>, Option<BigDecimal>) {
    let kind = AmountKind::parse(form.amount_kind.trim());
    let is_currency = form.is_currency();
    match kind {
        None => push(
            fields,
            "amount_kind",
            "Choose a fixed amount or a percent of the sale.",
        ),
        Some(AmountKind::Percent) if trigger.is_some_and(|t| t != Trigger::Sale) => push(
            fields,
            "amount_kind",
            "A percent of the sale needs the sale trigger: choose a fixed amount for this trigger.",
        ),
        Some(AmountKind::Percent) if !is_currency => push(
            fields,
            "amount_kind",
            "A percent of the sale is paid in the sale's currency: tick \"Is a currency\".",
        ),
        _ => {}
    }
    let raw_units = if is_currency {
        &form.currency
    } else {
        &form.unit_name
    };
    let amount_units = units(raw_units, is_currency)
        .map_err(|message| push(fields, "units", message))
        .ok();
    let max_reward = if kind == Some(AmountKind::Percent) {
        optional_decimal(
            fields,
            "max_reward",
            &form.max_reward,
            decimals_for(is_currency),
            &BigDecimal::from(MAX_REWARD),
        )
    } else {
        if !form.max_reward.trim().is_empty() {
            push(
                fields,
                "max_reward",
                "A maximum per reward applies to percent rules only: clear it or choose a percent.",
            );
        }
        None
    };
    (kind, amount_units, max_reward)
}

/// The limits per referrer (in all, per month) and the budget; empty means none.
fn limits(fields: &mut FieldErrors, form: &RuleFields) -> (Option<i32>, Option<i32>, Option<BigDecimal>) {
    let message = "Enter a whole number from 1 to 1,000,000, or leave it empty for no limit.";
    let per_referrer = optional_count(
        fields,
        "limit_per_referrer",
        &form.limit_per_referrer,
        1,
        1_000_000,
        message,
    );
    let per_month = optional_count(
        fields,
        "limit_per_referrer_month",
        &form.limit_per_referrer_month,
        1,
        1_000_000,
        message,
    );
    let budget = optional_decimal(
        fields,
        "budget",
        &form.budget,
        decimals_for(form.is_currency()),
        &BigDecimal::from(MAX_BUDGET),
    );
    (per_referrer, per_month, budget)
}

pub(super) fn parse(form: &RuleFields) -> Result<RuleInput, Error> {
    let mut fields = FieldErrors::new();
    let name = one_line(&form.name, MAX_NAME_CHARS);
    if name.is_none() {
        push(
            &mut fields,
            "name",
            format!("Enter a name (at most {MAX_NAME_CHARS} characters on one line)."),
        );
    }
    let trigger = Trigger::parse(form.trigger.trim());
    if trigger.is_none() {
        push(
            &mut fields,
            "trigger",
            "Choose what fires the rule: the friend signs up, is approved, or buys.",
        );
    }
    let sale = sale_options(&mut fields, form, trigger);
    let (kind, amount_units, max_reward) = kind_and_units(&mut fields, form, trigger);
    let (referrer_amount, friend_amount) = amounts(&mut fields, form, kind, form.is_currency());
    let (limit_per_referrer, limit_per_referrer_month, budget) = limits(&mut fields, form);
    let hold_days = match form.hold_days.trim().parse::<i32>() {
        Ok(days) if (0..=365).contains(&days) => Some(days),
        _ => {
            push(
                &mut fields,
                "hold_days",
                "Enter a whole number of days from 0 to 365 (0: no hold).",
            );
            None
        }
    };
    match (name, trigger, kind, amount_units, hold_days) {
        (Some(name), Some(trigger), Some(amount_kind), Some(amount_units), Some(hold_days))
            if fields.is_empty() =>
        {
            Ok(RuleInput {
                name,
                trigger,
                sale_scope: sale.scope,
                sale_count: sale.count,
                within_days: sale.within_days,
                min_sale_amount: sale.min_amount,
                product_type: sale.product_type,
                amount_kind,
                referrer_amount,
                friend_amount,
                amount_units,
                is_currency: form.is_currency(),
                max_reward,
                limit_per_referrer,
                limit_per_referrer_month,
                budget,
                hold_days,
                needs_approval: form.needs_approval(),
                enabled: form.enabled(),
            })
        }
        _ => Err(Error::invalid_fields(fields)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(form: &RuleFields, field: &str) -> String {
        match parse(form) {
            Err(error) => error
                .field_errors()
                .and_then(|fields| fields.get(field))
                .map(|messages| messages.join(" "))
                .unwrap_or_default(),
            Ok(_) => String::new(),
        }
    }

    fn sale_rule() -> RuleFields {
        RuleFields {
            name: "Ten for a first sale".into(),
            referrer_amount: "10".into(),
            ..RuleFields::fresh()
        }
    }

    #[test]
    fn a_fresh_sale_rule_parses() {
        let input = parse(&sale_rule()).unwrap();
        assert_eq!(input.trigger, Trigger::Sale);
        assert_eq!(input.sale_scope, Some(SaleScope::First));
        assert_eq!(input.referrer_amount, Some(BigDecimal::from(10)));
        assert_eq!(input.friend_amount, None);
        assert_eq!(input.amount_units, "USD");
        assert_eq!(input.hold_days, 14);
    }

    #[test]
    fn decimals_follow_the_units() {
        let mut form = sale_rule();
        form.referrer_amount = "10.505".into();
        assert!(message(&form, "referrer_amount").contains("at most 2 decimals"));
        form.is_currency = None;
        form.unit_name = "points".into();
        let input = parse(&form).unwrap();
        assert_eq!(input.amount_units, "points");
        assert_eq!(
            parse_decimal("1e3", 2, &BigDecimal::from(10)).unwrap_err(),
            "Enter a plain number such as 10 or 10.50."
        );
        assert_eq!(
            parse_decimal("11", 2, &BigDecimal::from(10)).unwrap_err(),
            "Enter at most 10."
        );
    }

    #[test]
    fn options_a_trigger_never_reads_are_refused() {
        let mut form = sale_rule();
        form.trigger = "customer_created".into();
        form.within_days = "30".into();
        assert!(message(&form, "within_days").contains("Only sale rules"));
        form.within_days.clear();
        form.amount_kind = "percent".into();
        assert!(message(&form, "amount_kind").contains("needs the sale trigger"));
    }

    #[test]
    fn sides_and_percentages_are_checked() {
        let mut form = sale_rule();
        form.earner = "both".into();
        assert!(message(&form, "friend_amount").contains("Enter an amount for the friend"));
        form.earner = "referrer".into();
        form.friend_amount = "5".into();
        assert!(message(&form, "friend_amount").contains("earns nothing"));
        form.friend_amount.clear();
        form.amount_kind = "percent".into();
        form.referrer_amount = "120".into();
        assert!(message(&form, "referrer_amount").contains("at most 100"));
        form.referrer_amount = "12.5".into();
        form.max_reward = "30".into();
        let input = parse(&form).unwrap();
        assert_eq!(input.max_reward, Some(BigDecimal::from(30)));
        form.amount_kind = "fixed".into();
        assert!(message(&form, "max_reward").contains("percent rules only"));
    }

    #[test]
    fn first_n_needs_its_count_and_hold_is_bounded() {
        let mut form = sale_rule();
        form.sale_scope = "first_n".into();
        assert!(message(&form, "sale_count").contains("how many"));
        form.sale_count = "3".into();
        form.hold_days = "366".into();
        assert!(message(&form, "hold_days").contains("0 to 365"));
        form.hold_days = "0".into();
        assert_eq!(parse(&form).unwrap().sale_count, Some(3));
    }
}
