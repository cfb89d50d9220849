//! How the dashboard shows numbers, amounts, shares and times: `250,000 points`,
//! `1,234.50 EUR`, `<1%`, "3 minutes ago" with the exact UTC time on hover. Every template
//! uses these through the Askama filters in [`filters`] (`use crate::web::format::filters;`
//! next to a template struct); CSV exports and JSON keep the raw values.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Datelike, Utc};

use crate::domain::ledger::format_amount;

pub use crate::domain::ledger::grouped;

/// A count: `1234567` as `1,234,567`.
pub fn number(n: i64) -> String {
    grouped(&n.to_string())
}

/// An amount without its unit: `1,234.50` for currencies, `250,000` or `12.5` for units.
pub fn amount(value: &BigDecimal, is_currency: bool) -> String {
    grouped(&format_amount(value, is_currency))
}

/// An amount with its unit: `1,234.50 EUR`, `250,000 points`.
pub fn money(value: &BigDecimal, units: &str, is_currency: bool) -> String {
    format!("{} {units}", amount(value, is_currency))
}

/// `part` of `whole` as a percentage with at most one decimal; a share that is not zero
/// never reads `0%` (`<0.1%`), one short of all never `100%` (`>99.9%`).
pub fn percent(part: i64, whole: i64) -> String {
    crate::domain::dashboard::share(part, whole)
}

/// When something happened (or will), for people: "just now", "3 minutes ago", "today
/// 14:02", "yesterday 14:02", "in 5 minutes", "tomorrow 09:00", "5 Dec 14:02",
/// "2025-11-02". Dates are UTC, like the exact time
/// shown on hover.
pub fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let elapsed = now.signed_duration_since(at);
    let minutes = elapsed.num_minutes();
    if elapsed.num_seconds() < 60 && elapsed.num_seconds() > -60 {
        return "just now".to_string();
    }
    if (1..60).contains(&minutes) {
        return if minutes == 1 {
            "1 minute ago".to_string()
        } else {
            format!("{minutes} minutes ago")
        };
    }
    if (-59..=-1).contains(&minutes) {
        return if minutes == -1 {
            "in 1 minute".to_string()
        } else {
            format!("in {} minutes", -minutes)
        };
    }
    let day = at.date_naive();
    let today = now.date_naive();
    let time = at.format("%H:%M");
    if day == today {
        format!("today {time}")
    } else if today.pred_opt() == Some(day) {
        format!("yesterday {time}")
    } else if today.succ_opt() == Some(day) {
        format!("tomorrow {time}")
    } else if day.year() == today.year() {
        format!("{} {time}", at.format("%-d %b"))
    } else {
        at.format("%Y-%m-%d").to_string()
    }
}

/// The exact time, as shown on hover: `2026-12-07 14:02:33 UTC`.
pub fn exact(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `<time datetime="…" title="…">3 minutes ago</time>`.
pub fn time_element(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    // Every part is built from digits, letters and punctuation of our own formats: nothing
    // to escape.
    format!(
        "<time datetime=\"{}\" title=\"{}\">{}</time>",
        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        exact(at),
        relative(at, now)
    )
}

/// The Askama filters: `{{ count|number }}`, `{{ balance.amount|money(balance.amount_units,
/// balance.is_currency) }}`, `{{ row.amount|amount(row.is_currency) }}`,
/// `{{ part|percent(whole) }}`, `{{ event.created_at|when }}`.
pub mod filters {
    use askama::filters::Safe;
    use askama::Values;
    use bigdecimal::BigDecimal;
    use chrono::{DateTime, Utc};

    /// What a template hands a filter: a value, or a reference to one (askama passes
    /// `&&i64` where a loop borrows), read through to the value.
    pub trait Shown<T> {
        fn shown(&self) -> T;
    }

    macro_rules! shown_as_i64 {
        ($($type:ty),*) => {$(
            impl Shown<i64> for $type {
                fn shown(&self) -> i64 {
                    i64::from(*self)
                }
            }
        )*};
    }
    shown_as_i64!(i64, i32, u32, i16, u16, u8);

    impl Shown<i64> for usize {
        fn shown(&self) -> i64 {
            i64::try_from(*self).unwrap_or(i64::MAX)
        }
    }

    impl Shown<bool> for bool {
        fn shown(&self) -> bool {
            *self
        }
    }

    impl Shown<DateTime<Utc>> for DateTime<Utc> {
        fn shown(&self) -> DateTime<Utc> {
            *self
        }
    }

    impl<'a> Shown<&'a BigDecimal> for &'a BigDecimal {
        fn shown(&self) -> &'a BigDecimal {
            self
        }
    }

    impl<T: Copy, S: Shown<T> + ?Sized> Shown<T> for &S {
        fn shown(&self) -> T {
            (**self).shown()
        }
    }

    #[askama::filter_fn]
    pub fn number<T: Shown<i64>>(value: T, _: &dyn Values) -> askama::Result<String> {
        Ok(super::number(value.shown()))
    }

    #[askama::filter_fn]
    pub fn amount<'a, T: Shown<&'a BigDecimal>, B: Shown<bool>>(
        value: T,
        _: &dyn Values,
        is_currency: B,
    ) -> askama::Result<String> {
        Ok(super::amount(value.shown(), is_currency.shown()))
    }

    #[askama::filter_fn]
    pub fn money<'a, T: Shown<&'a BigDecimal>, B: Shown<bool>>(
        value: T,
        _: &dyn Values,
        units: &str,
        is_currency: B,
    ) -> askama::Result<String> {
        Ok(super::money(value.shown(), units, is_currency.shown()))
    }

    #[askama::filter_fn]
    pub fn percent<T: Shown<i64>>(part: T, _: &dyn Values, whole: &i64) -> askama::Result<String> {
        Ok(super::percent(part.shown(), *whole))
    }

    #[askama::filter_fn]
    pub fn when<T: Shown<DateTime<Utc>>>(at: T, _: &dyn Values) -> askama::Result<Safe<String>> {
        Ok(Safe(super::time_element(at.shown(), Utc::now())))
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use chrono::TimeZone;

    use super::*;

    fn decimal(text: &str) -> BigDecimal {
        BigDecimal::from_str(text).unwrap()
    }

    #[test]
    fn numbers_and_amounts_are_grouped_by_thousands() {
        assert_eq!(number(0), "0");
        assert_eq!(number(999), "999");
        assert_eq!(number(250_000), "250,000");
        assert_eq!(number(-1_234_567), "-1,234,567");
        assert_eq!(money(&decimal("250000"), "points", false), "250,000 points");
        assert_eq!(money(&decimal("1234.5"), "EUR", true), "1,234.50 EUR");
        assert_eq!(amount(&decimal("-1000000.25"), true), "-1,000,000.25");
        assert_eq!(amount(&decimal("12.5000"), false), "12.5");
        assert_eq!(grouped("100"), "100");
    }

    #[test]
    fn a_share_that_is_not_zero_never_reads_zero() {
        assert_eq!(percent(0, 10), "0%");
        assert_eq!(percent(1, 100_000), "<0.1%");
        assert_eq!(percent(1, 200), "0.5%");
        assert_eq!(percent(99_999, 100_000), ">99.9%");
        assert_eq!(percent(5, 5), "100%");
    }

    #[test]
    fn times_read_as_people_say_them() {
        let now = Utc.with_ymd_and_hms(2026, 12, 7, 15, 30, 0).unwrap();
        let at = |d, h, m| Utc.with_ymd_and_hms(2026, 12, d, h, m, 0).unwrap();
        assert_eq!(relative(at(7, 15, 29), now), "1 minute ago");
        assert_eq!(relative(at(7, 15, 30), now), "just now");
        assert_eq!(relative(at(7, 15, 27), now), "3 minutes ago");
        assert_eq!(relative(at(7, 9, 5), now), "today 09:05");
        assert_eq!(relative(at(6, 14, 2), now), "yesterday 14:02");
        assert_eq!(relative(at(1, 8, 0), now), "1 Dec 08:00");
        assert_eq!(relative(at(7, 15, 35), now), "in 5 minutes");
        assert_eq!(relative(at(8, 9, 0), now), "tomorrow 09:00");
        assert_eq!(relative(at(22, 9, 0), now), "22 Dec 09:00");
        let last_year = Utc.with_ymd_and_hms(2025, 11, 2, 8, 0, 0).unwrap();
        assert_eq!(relative(last_year, now), "2025-11-02");
        assert_eq!(
            time_element(at(6, 14, 2), now),
            "<time datetime=\"2026-12-06T14:02:00Z\" title=\"2026-12-06 14:02:00 UTC\">yesterday 14:02</time>"
        );
    }
}
