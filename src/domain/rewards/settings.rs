//! A program's reward settings: the referral velocity that flags a referrer's rewards for
//! review, and the amount up to which support members may approve rewards.

use bigdecimal::BigDecimal;
use chrono::Utc;
use diesel::prelude::*;
use serde_json::json;

use super::rules::{parse_decimal, plain};
use crate::db::schema::programs;
use crate::domain::{audit, Actor};
use crate::error::{Error, FieldErrors};

/// The largest approval limit the form takes (rewards are at most 1,000,000 each).
pub const MAX_APPROVAL_LIMIT: u32 = 1_000_000;
pub const MAX_REFERRALS_PER_HOUR: i32 = 100_000;

#[derive(Clone, Debug, PartialEq, Queryable, Selectable)]
#[diesel(table_name = programs)]
pub struct RewardSettings {
    /// More new referrals than this in an hour flag a referrer's rewards for review.
    #[diesel(column_name = rewards_max_referrals_per_hour)]
    pub max_referrals_per_hour: i32,
    /// Support members may approve rewards up to this amount; `None`: no threshold.
    #[diesel(column_name = rewards_support_approval_limit)]
    pub support_approval_limit: Option<BigDecimal>,
}

impl RewardSettings {
    pub fn approval_limit_text(&self) -> String {
        self.support_approval_limit
            .as_ref()
            .map(plain)
            .unwrap_or_default()
    }

    /// Checks the form's two values; an empty approval limit means no threshold.
    pub fn parse(
        max_referrals_per_hour: &str,
        support_approval_limit: &str,
    ) -> Result<RewardSettings, Error> {
        let mut fields = FieldErrors::new();
        let max = match max_referrals_per_hour.trim().parse::<i32>() {
            Ok(value) if (1..=MAX_REFERRALS_PER_HOUR).contains(&value) => Some(value),
            _ => {
                fields.insert(
                    "max_referrals_per_hour".into(),
                    vec!["Enter a whole number of referrals from 1 to 100,000.".into()],
                );
                None
            }
        };
        let raw_limit = support_approval_limit.trim();
        let limit = if raw_limit.is_empty() {
            Ok(None)
        } else {
            match parse_decimal(raw_limit, 4, &BigDecimal::from(MAX_APPROVAL_LIMIT)) {
                Ok(value) => Ok(Some(value)),
                // Zero is a valid threshold: every approval then needs an admin.
                Err(_) if is_plain_zero(raw_limit) => Ok(Some(BigDecimal::from(0))),
                Err(message) => Err(message),
            }
        };
        let limit = limit
            .map_err(|message| {
                fields.insert("support_approval_limit".into(), vec![message]);
            })
            .ok();
        match (max, limit) {
            (Some(max_referrals_per_hour), Some(support_approval_limit)) => Ok(RewardSettings {
                max_referrals_per_hour,
                support_approval_limit,
            }),
            _ => Err(Error::invalid_fields(fields)),
        }
    }

    fn as_json(&self) -> serde_json::Value {
        json!({
            "rewards_max_referrals_per_hour": self.max_referrals_per_hour,
            "rewards_support_approval_limit": self.support_approval_limit.as_ref().map(plain),
        })
    }
}

/// `0`, `0.00`: a zero written as a plain number.
fn is_plain_zero(raw: &str) -> bool {
    let (whole, fraction) = raw.split_once('.').unwrap_or((raw, ""));
    !whole.is_empty() && whole.bytes().all(|b| b == b'0') && fraction.bytes().all(|b| b == b'0')
}

pub fn get(conn: &mut PgConnection, program_id: i64) -> Result<RewardSettings, Error> {
    Ok(programs::table
        .find(program_id)
        .select(RewardSettings::as_select())
        .first(conn)?)
}

/// Saves the settings with their audit event; unchanged settings write nothing.
pub fn update(
    conn: &mut PgConnection,
    actor: &Actor,
    program_id: i64,
    settings: RewardSettings,
) -> Result<RewardSettings, Error> {
    conn.transaction(|conn| {
        let before = programs::table
            .find(program_id)
            .select(RewardSettings::as_select())
            .for_update()
            .first(conn)?;
        if before == settings {
            return Ok(before);
        }
        diesel::update(programs::table.find(program_id))
            .set((
                programs::rewards_max_referrals_per_hour.eq(settings.max_referrals_per_hour),
                programs::rewards_support_approval_limit.eq(&settings.support_approval_limit),
                programs::updated_at.eq(Utc::now()),
            ))
            .execute(conn)?;
        audit::record(
            conn,
            actor,
            audit::Change {
                program_id: Some(program_id),
                action: "program.rewards_settings",
                subject_type: "program",
                subject_id: Some(program_id.to_string()),
                customer_id: None,
                before: Some(before.as_json()),
                after: Some(settings.as_json()),
            },
        )?;
        Ok(settings)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let ok = RewardSettings::parse("20", "").unwrap();
        assert_eq!(ok.support_approval_limit, None);
        assert_eq!(
            RewardSettings::parse("5", "0").unwrap().support_approval_limit,
            Some(BigDecimal::from(0))
        );
        assert_eq!(
            RewardSettings::parse("5", "50.5")
                .unwrap()
                .support_approval_limit
                .map(|v| plain(&v)),
            Some("50.5".into())
        );
        let error = RewardSettings::parse("0", "-3").unwrap_err();
        let fields = error.field_errors().unwrap();
        assert!(fields["max_referrals_per_hour"][0].contains("1 to 100,000"));
        assert!(fields["support_approval_limit"][0].contains("plain number"));
    }
}
